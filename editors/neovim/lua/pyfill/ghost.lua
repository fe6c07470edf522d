--- The plugin's own inline-completion client (Neovim 0.9-0.11, and 0.12 without auto-trigger):
--- per buffer, asks `textDocument/inlineCompletion` after a quiet time, drops answers for text
--- or a cursor that moved on, draws them with `display` and applies accepts. The slicing and the
--- edits themselves are `suggestion`'s.

local compat = require('pyfill.compat')
local display = require('pyfill.display')
local suggestion = require('pyfill.suggestion')
local status = require('pyfill.status')

local M = {}

local INVOKED, AUTOMATIC = 1, 2
local REQUEST_CANCELLED, CONTENT_MODIFIED = -32800, -32801

---@class pyfill.GhostBuffer
---@field client_id integer
---@field augroup integer
---@field timer? uv.uv_timer_t debounce before asking
---@field asked? string changedtick:row:col last asked for (no second request for it)
---@field pending? { id: integer, tick: integer, row: integer, col: integer, sent: number }
---@field shown? pyfill.Suggestion

---@type table<integer, pyfill.GhostBuffer>
local buffers = {}

local settings = { debounce_ms = 75, auto_trigger = true, enabled = true }

---@param s { debounce_ms: integer, auto_trigger: boolean, enabled: boolean }
function M.configure(s)
  settings = s
end

local function in_insert_mode()
  return vim.api.nvim_get_mode().mode:sub(1, 1) == 'i'
end

--- The cursor in `bufnr` if it is the current buffer: 0-based row, byte column, its line and
--- the buffer's changedtick.
local function cursor_in(bufnr)
  if vim.api.nvim_get_current_buf() ~= bufnr then
    return nil
  end
  local pos = vim.api.nvim_win_get_cursor(0)
  local row = pos[1] - 1
  return {
    row = row,
    col = pos[2],
    line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, true)[1],
    tick = vim.api.nvim_buf_get_changedtick(bufnr),
  }
end

local function stop_timer(b)
  if b.timer then
    b.timer:stop()
    if not b.timer:is_closing() then
      b.timer:close()
    end
    b.timer = nil
  end
end

local function cancel_pending(b)
  local pending = b.pending
  b.pending = nil
  local client = pending and vim.lsp.get_client_by_id(b.client_id)
  if client then
    compat.cancel_request(client, pending.id)
  end
end

local function hide(bufnr)
  local b = buffers[bufnr]
  if b then
    b.shown = nil
  end
  display.clear(bufnr)
end

local function show(bufnr, s)
  buffers[bufnr].shown = s
  display.show(bufnr, s)
end

--- The answer to request `id`, asked at `asked`; shown only if it is still the newest request
--- and neither the text nor the cursor moved since.
local function on_answer(bufnr, id, asked, encoding, err, result)
  local b = buffers[bufnr]
  if not b or not b.pending or b.pending.id ~= id then
    return
  end
  local sent = b.pending.sent
  b.pending = nil
  if err then
    if err.code ~= REQUEST_CANCELLED and err.code ~= CONTENT_MODIFIED then
      vim.notify_once('pyfill: ' .. (err.message or vim.inspect(err)), vim.log.levels.WARN)
    end
    return
  end
  local now = cursor_in(bufnr)
  if not now or not in_insert_mode() or now.tick ~= asked.tick or now.row ~= asked.row or now.col ~= asked.col then
    return
  end
  local items = type(result) == 'table' and (result.items or result) or {}
  for _, item in ipairs(items) do
    local s = suggestion.from_item(item, now, encoding)
    if s then
      status.record_latency(math.floor(compat.now_ms() - sent + 0.5))
      show(bufnr, s)
      return
    end
  end
  hide(bufnr)
end

--- Asks the server for a suggestion at the cursor now. The older request is cancelled after the
--- newer is sent, so the server can let the newer join a generation the user typed along.
---@param bufnr integer
---@param kind? integer lsp.InlineCompletionTriggerKind
function M.request(bufnr, kind)
  local b = buffers[bufnr]
  local client = b and vim.lsp.get_client_by_id(b.client_id)
  local c = b and settings.enabled and in_insert_mode() and cursor_in(bufnr)
  if not client or not c then
    return
  end
  stop_timer(b)
  b.asked = ('%d:%d:%d'):format(c.tick, c.row, c.col)
  local encoding = client.offset_encoding or 'utf-16'
  local params = {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    position = { line = c.row, character = suggestion.encoded_col(c.line, c.col, encoding) },
    context = { triggerKind = kind or AUTOMATIC },
  }
  local older = b.pending
  local id
  id = compat.request(client, 'textDocument/inlineCompletion', params, function(err, result)
    on_answer(bufnr, id, c, encoding, err, result)
  end, bufnr)
  b.pending = id and { id = id, tick = c.tick, row = c.row, col = c.col, sent = compat.now_ms() } or nil
  if older then
    compat.cancel_request(client, older.id)
  end
end

--- After an edit or a cursor move in insert mode: keeps what is left of the shown suggestion
--- when the user typed along it, hides it otherwise, and asks again after the quiet time.
local function on_edit(bufnr)
  local b = buffers[bufnr]
  local c = b and settings.enabled and cursor_in(bufnr)
  if not c then
    return
  end
  if b.shown then
    local rest = suggestion.typed_along(b.shown, c)
    if rest then
      show(bufnr, rest)
    else
      hide(bufnr)
    end
  end
  if not settings.auto_trigger or b.asked == ('%d:%d:%d'):format(c.tick, c.row, c.col) then
    return
  end
  stop_timer(b)
  b.timer = compat.uv.new_timer()
  b.timer:start(
    settings.debounce_ms,
    0,
    vim.schedule_wrap(function()
      if buffers[bufnr] then
        M.request(bufnr, AUTOMATIC)
      end
    end)
  )
end

--- Leaving insert mode or the buffer: nothing shown, nothing asked.
local function reset(bufnr)
  local b = buffers[bufnr]
  if b then
    stop_timer(b)
    cancel_pending(b)
    b.asked = nil
  end
  hide(bufnr)
end

---@param bufnr integer
---@param client_id integer
function M.attach(bufnr, client_id)
  if buffers[bufnr] then
    buffers[bufnr].client_id = client_id
    return
  end
  local augroup = vim.api.nvim_create_augroup('pyfill.ghost.' .. bufnr, { clear = true })
  buffers[bufnr] = { client_id = client_id, augroup = augroup }
  vim.api.nvim_create_autocmd({ 'InsertEnter', 'TextChangedI', 'CursorMovedI' }, {
    group = augroup,
    buffer = bufnr,
    callback = function()
      on_edit(bufnr)
    end,
  })
  vim.api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = augroup,
    buffer = bufnr,
    callback = function()
      reset(bufnr)
    end,
  })
end

---@param bufnr integer
function M.detach(bufnr)
  local b = buffers[bufnr]
  if not b then
    return
  end
  reset(bufnr)
  pcall(vim.api.nvim_del_augroup_by_id, b.augroup)
  buffers[bufnr] = nil
end

---@param bufnr integer
---@return boolean
function M.visible(bufnr)
  return buffers[bufnr] ~= nil and buffers[bufnr].shown ~= nil
end

--- Applies `piece` of `s` (checked again: the accept was scheduled), then shows what is left.
local function apply(bufnr, s, piece)
  local c = cursor_in(bufnr)
  if not c or c.row ~= s.row or c.col ~= s.col then
    return
  end
  local e = suggestion.edit(s, piece)
  vim.api.nvim_buf_set_text(bufnr, e.row, e.start_col, e.row, e.end_col, e.lines)
  vim.api.nvim_win_set_cursor(0, { e.cursor[1] + 1, e.cursor[2] })
  local rest = piece ~= s.ghost and suggestion.typed_along(s, cursor_in(bufnr))
  if rest then
    show(bufnr, rest)
  else
    hide(bufnr)
  end
end

--- Accepts the shown suggestion, its next word or its next line. Returns false when nothing is
--- shown (the key then does what it does without pyfill). The edit runs scheduled: this is
--- called from `<expr>` mappings, where changing text fails (E565).
---@param bufnr integer
---@param what 'all'|'word'|'line'
---@return boolean
function M.accept(bufnr, what)
  local b = buffers[bufnr]
  local s = b and b.shown
  local c = s and cursor_in(bufnr)
  if not c or c.row ~= s.row or c.col ~= s.col then
    return false
  end
  local piece = what == 'word' and suggestion.next_word(s.ghost)
    or what == 'line' and suggestion.next_line(s.ghost)
    or s.ghost
  vim.schedule(function()
    apply(bufnr, s, piece)
  end)
  return true
end

--- Hides the suggestion and drops the request in flight; false when nothing was shown.
---@param bufnr integer
---@return boolean
function M.dismiss(bufnr)
  local b = buffers[bufnr]
  if not b or not b.shown then
    return false
  end
  stop_timer(b)
  cancel_pending(b)
  hide(bufnr)
  return true
end

--- After the model became ready (requests before got empty answers): ask for the buffer being
--- typed in.
function M.on_ready()
  local bufnr = vim.api.nvim_get_current_buf()
  if buffers[bufnr] and settings.auto_trigger then
    M.request(bufnr, AUTOMATIC)
  end
end

--- Manual trigger.
---@param bufnr integer
function M.trigger(bufnr)
  M.request(bufnr, INVOKED)
end

--- Clears every buffer (suggestions turned off).
function M.reset_all()
  for bufnr in pairs(buffers) do
    reset(bufnr)
  end
end

return M
