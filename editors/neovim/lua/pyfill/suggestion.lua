--- Pure logic of a suggestion: from the server's item to what ghost text shows, what a partial
--- accept takes, and the edit that applies it. Plain Lua on strings and numbers: no `vim.api`,
--- no buffers, so `tests/unit.lua` runs it headless. Columns are 0-based byte offsets into the
--- line unless a name says otherwise; only `byte_col` and `encoded_col` speak the LSP's units.

local M = {}

--- Byte length of the UTF-8 character that starts with byte `b` (1 for a stray byte).
local function char_len(b)
  if b >= 0xF0 then
    return 4
  elseif b >= 0xE0 then
    return 3
  elseif b >= 0xC0 then
    return 2
  end
  return 1
end

--- Units of `encoding` ('utf-8', 'utf-16', 'utf-32') a character of `len` bytes takes.
local function units(len, encoding)
  if encoding == 'utf-8' then
    return len
  elseif encoding == 'utf-16' then
    return len == 4 and 2 or 1
  end
  return 1
end

--- The byte column of `line` at column `col` counted in `encoding` (an LSP position's
--- `character`). Past the end of the line gives the line's length; a column inside a
--- character (half a surrogate pair) gives the start of that character.
---@param line string
---@param col integer
---@param encoding string
---@return integer
function M.byte_col(line, col, encoding)
  local byte, counted = 0, 0
  while byte < #line do
    local len = char_len(line:byte(byte + 1))
    local n = units(len, encoding)
    if counted + n > col then
      return byte
    end
    counted = counted + n
    byte = byte + len
  end
  return #line
end

--- The column in `encoding` of byte column `byte` of `line` (the inverse of `byte_col`). A byte
--- inside a character counts that whole character.
---@param line string
---@param byte integer
---@param encoding string
---@return integer
function M.encoded_col(line, byte, encoding)
  local at, counted = 0, 0
  while at < byte and at < #line do
    local len = char_len(line:byte(at + 1))
    counted = counted + units(len, encoding)
    at = at + len
  end
  return counted
end

--- Splits on '\n' only, keeping empty pieces: "a\n" is { "a", "" }.
---@param text string
---@return string[]
function M.lines(text)
  local out, from = {}, 1
  while true do
    local nl = text:find('\n', from, true)
    if not nl then
      out[#out + 1] = text:sub(from)
      return out
    end
    out[#out + 1] = text:sub(from, nl - 1)
    from = nl + 1
  end
end

---@class pyfill.Suggestion
---@field row integer 0-based line of the cursor and of the server's range
---@field col integer byte column of the cursor the suggestion was made (or advanced) for
---@field start_col integer byte column where the server's range starts (<= col)
---@field end_col integer byte column where the server's range ends (>= col)
---@field before string the line up to `col`
---@field replaced string the line from `col` to `end_col`, which accepting the whole text replaces
---@field after string the line from `end_col` on
---@field ghost string what is still to insert at `col`: shown as ghost text, inserted by accept

--- The suggestion an `InlineCompletionItem` makes at the cursor, or nil when there is nothing to
--- show there: a snippet, a range on another line or after the cursor, text that does not start
--- with what the range already holds before the cursor, or nothing left to insert.
---@param item table lsp.InlineCompletionItem
---@param cursor { row: integer, col: integer, line: string } col in bytes
---@param encoding string the client's offset encoding
---@return pyfill.Suggestion?
function M.from_item(item, cursor, encoding)
  local text = item.insertText
  if type(text) ~= 'string' then
    return nil
  end
  local line, row, col = cursor.line, cursor.row, cursor.col
  local start_col, end_col = col, col
  if item.range then
    local s, e = item.range.start, item.range['end']
    if s.line ~= row or e.line ~= row then
      return nil
    end
    start_col = M.byte_col(line, s.character, encoding)
    end_col = M.byte_col(line, e.character, encoding)
    if start_col > col or end_col < col then
      return nil
    end
  end
  local typed = line:sub(start_col + 1, col)
  if text:sub(1, #typed) ~= typed then
    return nil
  end
  local ghost = text:sub(#typed + 1)
  if ghost == '' then
    return nil
  end
  return {
    row = row,
    col = col,
    start_col = start_col,
    end_col = end_col,
    before = line:sub(1, col),
    replaced = line:sub(col + 1, end_col),
    after = line:sub(end_col + 1),
    ghost = ghost,
  }
end

--- The suggestion after the user typed on its line: when the line now reads `before .. typed ..`
--- `replaced .. after` with the cursor after `typed`, and `typed` is how the ghost text starts,
--- the rest of it; else nil (the suggestion no longer applies, or was typed whole).
---@param s pyfill.Suggestion
---@param cursor { row: integer, col: integer, line: string }
---@return pyfill.Suggestion?
function M.typed_along(s, cursor)
  local line, col = cursor.line, cursor.col
  if cursor.row ~= s.row or col < #s.before or line:sub(1, #s.before) ~= s.before then
    return nil
  end
  local typed = line:sub(#s.before + 1, col)
  if line:sub(col + 1) ~= s.replaced .. s.after or s.ghost:sub(1, #typed) ~= typed then
    return nil
  end
  if #typed == #s.ghost then
    return nil
  end
  return {
    row = s.row,
    col = col,
    start_col = s.start_col,
    end_col = col + #s.replaced,
    before = line:sub(1, col),
    replaced = s.replaced,
    after = s.after,
    ghost = s.ghost:sub(#typed + 1),
  }
end

local function is_word_byte(b)
  return b >= 0x80 or (b >= 48 and b <= 57) or (b >= 65 and b <= 90) or (b >= 97 and b <= 122) or b == 95
end

local function is_space_byte(b)
  return b == 32 or b == 9 or b == 10 or b == 13
end

--- The start of `text` up to the end of its next word: leading whitespace (newlines too), then a
--- run of identifier characters, or else a run of punctuation. ` * radius` gives ` *`.
---@param text string
---@return string
function M.next_word(text)
  local i = 1
  while i <= #text and is_space_byte(text:byte(i)) do
    i = i + 1
  end
  if i > #text then
    return text
  end
  local word = is_word_byte(text:byte(i))
  while i <= #text do
    local b = text:byte(i)
    if is_space_byte(b) or is_word_byte(b) ~= word then
      break
    end
    i = i + 1
  end
  return text:sub(1, i - 1)
end

--- The start of `text` up to the end of its first line; when the text starts with a line break,
--- that break and the next line (accepting "the line" of a suggestion made at a line's end).
---@param text string
---@return string
function M.next_line(text)
  local from = text:sub(1, 1) == '\n' and 2 or 1
  local nl = text:find('\n', from, true)
  return nl and text:sub(1, nl - 1) or text
end

--- The buffer edit that accepts `piece` (the whole ghost text or a start of it): replace the
--- byte range from the cursor (and, for the whole text, the rest of the server's range) with
--- `lines`, then put the cursor after them. Rows and columns are 0-based bytes, as
--- `nvim_buf_set_text` and (row + 1) `nvim_win_set_cursor` take them.
---@param s pyfill.Suggestion
---@param piece string
---@return { row: integer, start_col: integer, end_col: integer, lines: string[], cursor: integer[] }
function M.edit(s, piece)
  local lines = M.lines(piece)
  local last = lines[#lines]
  local cursor_col = (#lines == 1 and s.col or 0) + #last
  return {
    row = s.row,
    start_col = s.col,
    end_col = piece == s.ghost and s.end_col or s.col,
    lines = lines,
    cursor = { s.row + #lines - 1, cursor_col },
  }
end

--- How ghost text `text` is drawn: the first line at the cursor and the rest as lines below,
--- tabs expanded (virtual text shows a tab as one cell).
---@param text string
---@param tabstop integer
---@return { first: string, rest: string[] }
function M.display(text, tabstop)
  local lines = M.lines(text)
  for i, l in ipairs(lines) do
    lines[i] = (l:gsub('\t', string.rep(' ', tabstop)))
  end
  return { first = table.remove(lines, 1), rest = lines }
end

--- Where the first line of ghost text goes: 'inline' where Neovim can push the line's text
--- right (0.10+); before that over the cells after the cursor when the cursor ends the line, or
--- else after the line's end.
---@param has_inline boolean
---@param at_line_end boolean
---@return 'inline'|'overlay'|'eol'
function M.first_line_position(has_inline, at_line_end)
  if has_inline then
    return 'inline'
  end
  return at_line_end and 'overlay' or 'eol'
end

return M
