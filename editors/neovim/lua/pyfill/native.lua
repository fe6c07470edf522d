--- Neovim 0.12's own inline completion (`vim.lsp.inline_completion`) driven for pyfill: turned
--- on per buffer; accepts go through `get()` with pyfill's own apply, which also takes a word or
--- a line and copes with text typed after the item was drawn. Latency comes from `LspRequest`.

local compat = require('pyfill.compat')
local status = require('pyfill.status')
local suggestion = require('pyfill.suggestion')

local M = {}

local METHOD = 'textDocument/inlineCompletion'

--- Neovim's namespace for the drawn item (created by the same name if not yet).
local namespace = vim.api.nvim_create_namespace('nvim.lsp.inline_completion')

---@type table<integer, true> client ids whose request times are watched
local watched = {}
---@type table<integer, number> request id -> when it was sent
local sent_at = {}

local function watch_latency(client_id)
  if watched[client_id] then
    return
  end
  watched[client_id] = true
  vim.api.nvim_create_autocmd('LspRequest', {
    group = vim.api.nvim_create_augroup('pyfill.native.' .. client_id, { clear = true }),
    callback = function(args)
      local data = args.data or {}
      local request = data.request or {}
      if data.client_id ~= client_id or request.method ~= METHOD then
        return
      end
      if request.type == 'pending' then
        sent_at[data.request_id] = compat.now_ms()
      elseif request.type == 'complete' and sent_at[data.request_id] then
        status.record_latency(math.floor(compat.now_ms() - sent_at[data.request_id] + 0.5))
        sent_at[data.request_id] = nil
      else
        sent_at[data.request_id] = nil
      end
    end,
  })
end

---@param bufnr integer
---@param client_id integer
function M.attach(bufnr, client_id)
  vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
  watch_latency(client_id)
end

--- Suggestions off (`:PyfillDisable`): the server, told `enable = false`, answers every request
--- with nothing. Neovim's completor stays attached: turning it off while a request is in flight
--- makes 0.12-dev's handler index a client state it has already dropped (an error prompt that
--- blocks the editor).
--- A suggestion already drawn is dismissed, so Tab cannot take it.
---@param bufnr integer
function M.pause(bufnr)
  if vim.api.nvim_buf_is_valid(bufnr) then
    M.dismiss(bufnr)
  end
end

---@param bufnr integer
function M.detach(bufnr)
  if vim.api.nvim_buf_is_valid(bufnr) then
    vim.lsp.inline_completion.enable(false, { bufnr = bufnr })
  end
end

---@param bufnr integer
---@return boolean
function M.visible(bufnr)
  return #vim.api.nvim_buf_get_extmarks(bufnr, namespace, 0, -1, { limit = 1 }) > 0
end

--- The item as a pyfill suggestion at the cursor now. The item's range was made for the cursor
--- it was asked at; text typed since is inside it, so its end moves up to the cursor.
---@param item vim.lsp.inline_completion.Item
local function suggestion_of(bufnr, item)
  if type(item.insert_text) ~= 'string' then
    return nil
  end
  local pos = vim.api.nvim_win_get_cursor(0)
  local row, col = pos[1] - 1, pos[2]
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, true)[1]
  local lsp_item = { insertText = item.insert_text }
  local r = item.range
  if r then
    local end_col = r.end_.col
    if r.end_.row == row and end_col < col then
      end_col = col
    end
    lsp_item.range = {
      start = { line = r.start.row, character = r.start.col },
      ['end'] = { line = r.end_.row, character = end_col },
    }
  end
  return suggestion.from_item(lsp_item, { row = row, col = col, line = line }, 'utf-8')
end

local function apply(bufnr, item, what)
  if vim.api.nvim_get_current_buf() ~= bufnr then
    return
  end
  local s = suggestion_of(bufnr, item)
  if not s then
    return
  end
  local piece = what == 'word' and suggestion.next_word(s.ghost)
    or what == 'line' and suggestion.next_line(s.ghost)
    or s.ghost
  local e = suggestion.edit(s, piece)
  vim.api.nvim_buf_set_text(bufnr, e.row, e.start_col, e.row, e.end_col, e.lines)
  vim.api.nvim_win_set_cursor(0, { e.cursor[1] + 1, e.cursor[2] })
end

--- Accepts the drawn item, or its next word or line; false when none is drawn. `get()` applies
--- it scheduled, so this works from `<expr>` mappings.
---@param bufnr integer
---@param what 'all'|'word'|'line'
---@return boolean
function M.accept(bufnr, what)
  if not M.visible(bufnr) then
    return false
  end
  return vim.lsp.inline_completion.get({
    bufnr = bufnr,
    on_accept = function(item)
      apply(bufnr, item, what)
    end,
  })
end

--- Hides the drawn item (taking it with an accept that inserts nothing); false when none is.
---@param bufnr integer
---@return boolean
function M.dismiss(bufnr)
  if not M.visible(bufnr) then
    return false
  end
  return vim.lsp.inline_completion.get({ bufnr = bufnr, on_accept = function() end })
end

return M
