--- pyfill for Neovim: `setup()` starts the `pyfill` language server for Python buffers and
--- shows its suggestions as ghost text, with Neovim's own `vim.lsp.inline_completion` (0.12+,
--- `native`) or the plugin's extmarks (`ghost`, 0.9-0.11). This file is the glue: options,
--- server start, keymaps, commands. Suggestion logic lives in `suggestion`, server state in
--- `status`.

local compat = require('pyfill.compat')
local config = require('pyfill.config')
local ghost = require('pyfill.ghost')
local status = require('pyfill.status')

local M = {}

---@type pyfill.Options?
local opts
local enabled = true

--- The ghost-text client for this Neovim and these options.
local function client_module()
  if opts.native ~= false and opts.auto_trigger and compat.has_native_inline_completion() then
    return require('pyfill.native'), 'native vim.lsp.inline_completion'
  end
  return ghost, "extmarks (the plugin's own)"
end

--- The running pyfill clients (of `bufnr`, if given); not those shutting down.
local function pyfill_clients(bufnr)
  return vim.tbl_filter(function(c)
    return not compat.is_stopped(c)
  end, compat.clients({ name = 'pyfill', bufnr = bufnr }))
end

--- Calls `handle(client_id, params)` for a notification, then Neovim's own handler if any; when
--- it turns the server ready, asks for a suggestion where the user is typing.
local function observed(method, handle)
  return function(err, result, ctx, cfg)
    local before = status.get(ctx.client_id)
    local was_ready = before and before.state == 'ready'
    handle(ctx.client_id, result)
    local after = status.get(ctx.client_id)
    if not was_ready and after and after.state == 'ready' and enabled and client_module() == ghost then
      vim.schedule(ghost.on_ready)
    end
    local default = vim.lsp.handlers[method]
    if default then
      return default(err, result, ctx, cfg)
    end
  end
end

local handlers = {
  ['pyfill/status'] = observed('pyfill/status', status.on_status),
  ['$/progress'] = observed('$/progress', status.on_progress),
  ['window/showMessage'] = observed('window/showMessage', status.on_message),
  ['window/logMessage'] = observed('window/logMessage', status.on_message),
}

--- The mapping's action, else what `lhs` did before pyfill mapped it (a mapping of the user's
--- or another plugin, or the key itself).
local function map(bufnr, lhs, action, desc)
  if not lhs then
    return
  end
  local previous = vim.fn.maparg(lhs, 'i', false, true)
  if vim.tbl_isempty(previous) or (previous.desc or ''):find('^pyfill') then
    previous = nil
  end
  vim.keymap.set('i', lhs, function()
    if action() then
      return ''
    end
    if not previous then
      return lhs
    end
    if previous.callback then
      local keys = previous.callback()
      return previous.expr == 1 and keys or ''
    end
    if previous.expr == 1 then
      return vim.api.nvim_eval(previous.rhs)
    end
    local keys = vim.api.nvim_replace_termcodes(previous.rhs, true, true, true)
    vim.api.nvim_feedkeys(keys, previous.noremap == 1 and 'n' or 'm', true)
    return ''
  end, { buffer = bufnr, expr = true, silent = true, desc = 'pyfill: ' .. desc })
end

local function set_keymaps(bufnr)
  local keys = opts.keymaps
  map(bufnr, keys.accept, function()
    return M.accept('all')
  end, 'accept the suggestion')
  map(bufnr, keys.accept_word, function()
    return M.accept('word')
  end, 'accept the next word of the suggestion')
  map(bufnr, keys.accept_line, function()
    return M.accept('line')
  end, 'accept the next line of the suggestion')
  map(bufnr, keys.dismiss, M.dismiss, 'dismiss the suggestion')
  map(bufnr, keys.trigger, function()
    M.trigger()
    return true
  end, 'ask for a suggestion')
end

local function on_attach(client, bufnr)
  if enabled then
    client_module().attach(bufnr, client.id)
  end
  set_keymaps(bufnr)
end

local function root_dir(bufnr)
  local name = vim.api.nvim_buf_get_name(bufnr)
  local dir = name ~= '' and vim.fs.dirname(name) or vim.fn.getcwd()
  local marker = vim.fs.find(opts.root_markers, { path = dir, upward = true })[1]
  return marker and vim.fs.dirname(marker) or dir
end

--- Starts (or reuses, per workspace root) the server for `bufnr`.
---@param bufnr integer
function M.attach(bufnr)
  if not opts or vim.bo[bufnr].buftype ~= '' then
    return
  end
  if vim.fn.executable(opts.cmd[1]) ~= 1 then
    vim.notify_once(
      ('pyfill: server %q not found: build it (cargo build --release) or set `binary` in setup()'):format(opts.cmd[1]),
      vim.log.levels.ERROR
    )
    return
  end
  -- An empty Lua table would go out as a JSON array, which the server refuses.
  local settings = next(opts.settings) and opts.settings or nil
  vim.lsp.start({
    name = 'pyfill',
    cmd = opts.cmd,
    root_dir = root_dir(bufnr),
    init_options = settings,
    settings = settings and { pyfill = settings },
    handlers = handlers,
    on_init = function(client)
      status.started(client.id)
      if not opts.completion_items and client.server_capabilities then
        client.server_capabilities.completionProvider = nil
      end
    end,
    on_attach = on_attach,
    on_exit = function(_, _, client_id)
      status.stopped(client_id)
    end,
  }, { bufnr = bufnr })
end

--- Accepts the shown suggestion (`what`: 'all', 'word' or 'line'); false when none is shown.
---@param what? 'all'|'word'|'line'
---@return boolean
function M.accept(what)
  if not enabled then
    return false
  end
  return client_module().accept(vim.api.nvim_get_current_buf(), what or 'all')
end

--- Hides the shown suggestion; false when none is shown.
---@return boolean
function M.dismiss()
  return enabled and client_module().dismiss(vim.api.nvim_get_current_buf())
end

---@return boolean
function M.visible()
  return enabled and client_module().visible(vim.api.nvim_get_current_buf())
end

--- Asks for a suggestion now (Neovim 0.12's own client asks by itself as you type).
function M.trigger()
  if enabled and client_module() == ghost then
    ghost.trigger(vim.api.nvim_get_current_buf())
  end
end

--- The options in force (after `setup()`), or nil.
---@return pyfill.Options?
function M.options()
  return opts
end

---@class pyfill.Status
---@field state string 'starting'|'loading'|'ready'|'disabled'|'error'|'stopped'
---@field message string
---@field percentage? number while loading, from a server that reports it
---@field model_missing? boolean the default model is not fetched
---@field latency_ms? integer of the last suggestion
---@field enabled boolean
---@field ghost string which client draws ghost text

--- The server's state for the current buffer (or the newest server), for statuslines.
---@return pyfill.Status
function M.status()
  if not opts then
    return { state = 'stopped', message = 'setup() not called', enabled = false, ghost = 'none' }
  end
  local client = pyfill_clients(vim.api.nvim_get_current_buf())[1]
  local s = status.get(client and client.id) or { state = 'stopped', message = 'no server running' }
  local latency = status.latency()
  local _, ghost_name = client_module()
  return {
    state = s.state,
    message = s.message,
    percentage = s.percentage,
    model_missing = s.model_missing,
    latency_ms = latency and latency.ms,
    enabled = enabled,
    ghost = ghost_name,
  }
end

local function notify_settings(changes)
  for _, client in ipairs(pyfill_clients()) do
    compat.notify(client, 'workspace/didChangeConfiguration', { settings = { pyfill = changes } })
  end
end

--- Turns suggestions on or off (sent to the servers as the `enable` setting).
---@param on boolean
function M.set_enabled(on)
  enabled = on
  opts.settings.enable = on
  ghost.configure({ debounce_ms = opts.debounce_ms, auto_trigger = opts.auto_trigger, enabled = on })
  notify_settings({ enable = on })
  local module = client_module()
  for _, client in ipairs(pyfill_clients()) do
    status.on_enable(client.id, on)
    for bufnr in pairs(client.attached_buffers or {}) do
      if on then
        module.attach(bufnr, client.id)
      else
        (module.pause or module.detach)(bufnr)
      end
    end
  end
  if on and #pyfill_clients() == 0 then
    M.attach_all()
  end
end

--- Starts the server for every loaded buffer of the configured filetypes.
function M.attach_all()
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) and vim.tbl_contains(opts.filetypes, vim.bo[bufnr].filetype) then
      M.attach(bufnr)
    end
  end
end

--- Stops the servers and starts them again for the open buffers (after fetching the model). A
--- server that has not exited 2 s after being asked to is killed.
function M.restart()
  local ids = {}
  for _, client in ipairs(pyfill_clients()) do
    for bufnr in pairs(client.attached_buffers or {}) do
      client_module().detach(bufnr)
    end
    compat.stop(client)
    ids[#ids + 1] = client.id
  end
  local waited = 0
  local timer = compat.uv.new_timer()
  timer:start(
    100,
    100,
    vim.schedule_wrap(function()
      waited = waited + 100
      local left = vim.tbl_filter(function(id)
        return vim.lsp.get_client_by_id(id) ~= nil
      end, ids)
      if waited == 2000 then
        for _, id in ipairs(left) do
          compat.stop(vim.lsp.get_client_by_id(id), true)
        end
      end
      if #left == 0 or waited >= 5000 then
        timer:stop()
        timer:close()
        M.attach_all()
      end
    end)
  )
end

--- Runs `pyfill model fetch`, then restarts the servers.
function M.fetch_model()
  local cmd = { opts.cmd[1], 'model', 'fetch' }
  vim.notify('pyfill: fetching the default model (about 500 MB)...')
  local output = {}
  local function collect(_, data)
    for _, l in ipairs(data or {}) do
      if l ~= '' then
        output[#output + 1] = l
      end
    end
  end
  local job = vim.fn.jobstart(cmd, {
    on_stdout = collect,
    on_stderr = collect,
    on_exit = function(_, code)
      vim.schedule(function()
        if code == 0 then
          vim.notify('pyfill: model fetched; restarting the server')
          M.restart()
        else
          vim.notify(
            ('pyfill: `%s` failed (%d):\n%s'):format(table.concat(cmd, ' '), code, table.concat(output, '\n')),
            vim.log.levels.ERROR
          )
        end
      end)
    end,
  })
  if job <= 0 then
    vim.notify('pyfill: could not run ' .. cmd[1], vim.log.levels.ERROR)
  end
end

local function create_commands()
  vim.api.nvim_create_user_command('PyfillStatus', function()
    local client = pyfill_clients(vim.api.nvim_get_current_buf())[1] or pyfill_clients()[1]
    local _, ghost_name = client_module()
    local lines = status.describe({
      client_id = client and client.id,
      cmd = opts.cmd,
      model = opts.settings.model,
      ghost = ghost_name,
      enabled = enabled,
    })
    vim.api.nvim_echo({ { table.concat(lines, '\n') } }, true, {})
  end, { desc = 'pyfill: server state, model, last latency' })
  vim.api.nvim_create_user_command('PyfillEnable', function()
    M.set_enabled(true)
  end, { desc = 'pyfill: turn suggestions on' })
  vim.api.nvim_create_user_command('PyfillDisable', function()
    M.set_enabled(false)
  end, { desc = 'pyfill: turn suggestions off' })
  vim.api.nvim_create_user_command('PyfillFetchModel', M.fetch_model, { desc = 'pyfill: download the default model' })
  vim.api.nvim_create_user_command('PyfillRestart', M.restart, { desc = 'pyfill: restart the server' })
end

--- Configures pyfill and starts it for the Python buffers, open ones included.
---@param user? table see `config.defaults`
function M.setup(user)
  opts = config.resolve(user)
  enabled = opts.settings.enable ~= false
  ghost.configure({ debounce_ms = opts.debounce_ms, auto_trigger = opts.auto_trigger, enabled = enabled })
  local group = vim.api.nvim_create_augroup('pyfill', { clear = true })
  vim.api.nvim_create_autocmd('FileType', {
    group = group,
    pattern = opts.filetypes,
    callback = function(args)
      M.attach(args.buf)
    end,
  })
  vim.api.nvim_create_autocmd('LspDetach', {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client and client.name == 'pyfill' then
        client_module().detach(args.buf)
      end
    end,
  })
  create_commands()
  M.attach_all()
end

return M
