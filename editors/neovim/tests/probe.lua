-- What test.sh reads back from the running Neovim, through
-- `nvim --server SOCK --remote-expr 'v:lua.pyfill_probe.NAME(...)'`. It looks only at what the
-- user would see (extmarks, buffer text), not at the plugin's internals, but for its status.
local M = {}

--- Namespaces ghost text is drawn in: the plugin's own, and Neovim 0.12's.
local namespaces = { 'pyfill', 'nvim.lsp.inline_completion' }

local function chunks_text(chunks)
  local out = {}
  for _, chunk in ipairs(chunks or {}) do
    if chunk[2] ~= 'ComplHintMore' then
      out[#out + 1] = chunk[1]
    end
  end
  return table.concat(out)
end

--- The ghost text drawn in the current buffer: the first line's virtual text, then each virtual
--- line, joined by newlines; '' when none is drawn.
function M.ghost_text()
  local all = vim.api.nvim_get_namespaces()
  for _, name in ipairs(namespaces) do
    local ns = all[name]
    if ns then
      for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })) do
        local d = mark[4]
        if d.virt_text or d.virt_lines then
          local lines = { chunks_text(d.virt_text) }
          for _, l in ipairs(d.virt_lines or {}) do
            lines[#lines + 1] = chunks_text(l)
          end
          return table.concat(lines, '\n')
        end
      end
    end
  end
  return ''
end

--- 1 when accepting a word would take all of the ghost text (a one-word suggestion).
function M.first_word_is_all()
  local text = M.ghost_text()
  return require('pyfill.suggestion').next_word(text) == text and 1 or 0
end

--- Writes the ghost text to `path` (exact bytes); returns its length.
function M.write_ghost(path)
  local text = M.ghost_text()
  local f = assert(io.open(path, 'wb'))
  f:write(text)
  f:close()
  return #text
end

--- Writes the buffer's text (lines joined by newlines, no final one) to `path`.
function M.write_buffer(path)
  local f = assert(io.open(path, 'wb'))
  f:write(table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, true), '\n'))
  f:close()
  return 1
end

--- 1 when the buffer's text (with a final newline) is the content of `path`.
function M.buffer_is(path)
  local f = io.open(path, 'rb')
  if not f then
    return 0
  end
  local want = f:read('*a')
  f:close()
  local got = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, true), '\n') .. '\n'
  return got == want and 1 or 0
end

function M.state()
  return require('pyfill').status().state
end

function M.status_message()
  return require('pyfill').status().message
end

function M.ghost_kind()
  return require('pyfill').status().ghost
end

function M.mode()
  return vim.api.nvim_get_mode().mode
end

--- The cursor's line as JSON (exact whitespace).
function M.line()
  return vim.fn.json_encode(vim.api.nvim_get_current_line())
end

--- What pyfill's <Tab> mapping is, to tell "pyfill fell back" from "no mapping".
function M.tab_mapping()
  return vim.fn.maparg('<Tab>', 'i', false, true).desc or ''
end

function M.messages()
  return vim.fn.execute('messages')
end

--- Output of :PyfillStatus.
function M.status_command()
  return vim.fn.execute('PyfillStatus')
end

return M
