--- What the plugin knows of the server: its state (from the `pyfill/status` notification, or,
--- from a server that does not send it, inferred from `$/progress`, `window/showMessage` and
--- `window/logMessage`), and the latency of the last suggestion. Fires `User PyfillStatus` on
--- each change, for statuslines.

local M = {}

---@class pyfill.ServerState
---@field state 'starting'|'loading'|'ready'|'disabled'|'error'|'stopped'
---@field message string
---@field percentage? number
---@field model_missing? boolean
---@field reported boolean the server sends `pyfill/status` (then nothing is inferred)

---@type table<integer, pyfill.ServerState> per client id
local servers = {}

---@type { ms: integer, at: number }?
local last_latency

local function changed()
  vim.schedule(function()
    vim.api.nvim_exec_autocmds('User', { pattern = 'PyfillStatus', modeline = false })
  end)
end

--- Updates the fields given; `vim.NIL` clears one.
local function set(client_id, fields)
  local s = servers[client_id] or { state = 'starting', message = '', reported = false }
  for k, v in pairs(fields) do
    if v == vim.NIL then
      s[k] = nil
    else
      s[k] = v
    end
  end
  servers[client_id] = s
  changed()
end

---@param client_id integer
function M.started(client_id)
  servers[client_id] = { state = 'starting', message = 'server started', reported = false }
  changed()
end

---@param client_id integer
function M.stopped(client_id)
  if servers[client_id] then
    set(client_id, { state = 'stopped', message = 'server exited', percentage = vim.NIL })
  end
end

--- `pyfill/status` params: { state, message, percentage?, modelMissing? }.
---@param client_id integer
---@param params table
function M.on_status(client_id, params)
  if type(params) ~= 'table' or type(params.state) ~= 'string' then
    return
  end
  set(client_id, {
    state = params.state,
    message = params.message or '',
    percentage = params.percentage or vim.NIL,
    model_missing = params.modelMissing == true,
    reported = true,
  })
end

---@param client_id integer
---@param params table lsp.ProgressParams
function M.on_progress(client_id, params)
  local s = servers[client_id]
  local value = type(params) == 'table' and params.value
  if (s and s.reported) or type(value) ~= 'table' then
    return
  end
  if value.kind == 'begin' then
    set(client_id, { state = 'loading', message = value.message or value.title or '' })
  elseif value.kind == 'report' then
    set(client_id, { message = value.message or s and s.message or '', percentage = value.percentage or vim.NIL })
  elseif value.kind == 'end' then
    local message = value.message or ''
    local ready = message:find('model ready', 1, true) ~= nil
    set(client_id, { state = ready and 'ready' or 'error', message = message, percentage = vim.NIL })
  end
end

--- `window/showMessage` and `window/logMessage` params.
---@param client_id integer
---@param params table
function M.on_message(client_id, params)
  local s = servers[client_id]
  if (s and s.reported) or type(params) ~= 'table' or type(params.message) ~= 'string' then
    return
  end
  local message = params.message
  if message:find('model ready', 1, true) then
    set(client_id, { state = 'ready', message = message })
  elseif params.type == 1 and (s == nil or s.state ~= 'ready') then
    set(client_id, {
      state = 'error',
      message = message,
      model_missing = message:find('pyfill model fetch', 1, true) ~= nil,
    })
  end
end

--- Marks the server disabled/loading when the plugin changed `enable` itself (a server that
--- reports its state overrides this at once).
---@param client_id integer
---@param enabled boolean
function M.on_enable(client_id, enabled)
  local s = servers[client_id]
  if s and not s.reported then
    set(
      client_id,
      enabled and { state = 'loading', message = 'loading the model' } or { state = 'disabled', message = 'disabled' }
    )
  end
end

---@param ms integer
function M.record_latency(ms)
  last_latency = { ms = ms, at = vim.uv and vim.uv.now() or vim.loop.now() }
  changed()
end

--- The state of client `client_id`, or of the most recently started client.
---@param client_id? integer
---@return pyfill.ServerState?
function M.get(client_id)
  if client_id then
    return servers[client_id]
  end
  local newest
  for id in pairs(servers) do
    if not newest or id > newest then
      newest = id
    end
  end
  return newest and servers[newest]
end

---@return { ms: integer, at: number }?
function M.latency()
  return last_latency
end

--- Lines for `:PyfillStatus`.
---@param info { client_id: integer?, cmd: string[], model: string?, ghost: string, enabled: boolean }
---@return string[]
function M.describe(info)
  local lines = {}
  local s = info.client_id and servers[info.client_id]
  if not s then
    lines[1] = 'pyfill: no server running (it starts when a Python buffer opens)'
  else
    local state = s.state
    if s.percentage then
      state = ('%s %d%%'):format(state, math.floor(s.percentage))
    end
    lines[1] = ('pyfill: %s%s'):format(state, s.message ~= '' and (' - ' .. s.message) or '')
    if s.model_missing then
      lines[#lines + 1] = '  the default model is not fetched: run :PyfillFetchModel (or `pyfill model fetch`)'
    end
    if not s.reported then
      lines[#lines + 1] = '  (state inferred from progress and messages: this server does not send pyfill/status)'
    end
  end
  lines[#lines + 1] = '  server: ' .. table.concat(info.cmd, ' ')
  lines[#lines + 1] = '  model: ' .. (info.model or 'the default model (`pyfill model path`)')
  lines[#lines + 1] = '  ghost text: ' .. info.ghost .. (info.enabled and '' or ' (disabled)')
  local l = last_latency
  if l then
    local now = vim.uv and vim.uv.now() or vim.loop.now()
    lines[#lines + 1] = ('  last suggestion: %d ms (%.0f s ago)'):format(l.ms, (now - l.at) / 1000)
  else
    lines[#lines + 1] = '  last suggestion: none yet'
  end
  return lines
end

return M
