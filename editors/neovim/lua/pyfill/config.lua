--- The plugin's options: defaults, the user's `setup()` table merged over them, and the server
--- settings cut down to the keys the server knows (it refuses a whole update that has any other).
--- No side effects but warnings.

local M = {}

--- Settings keys `pyfill` accepts in `initializationOptions` and `didChangeConfiguration`.
M.server_keys = {
  'enable',
  'model',
  'maxTokens',
  'prefixTokens',
  'suffixTokens',
  'relatedTokens',
  'promptFormat',
  'blockPrompt',
  'timeoutMs',
  'logLevel',
  'threads',
  'backend',
  'endpoint',
  'remoteModel',
  'apiKeyEnv',
  'tokenizer',
  'remoteTimeoutMs',
}

---@class pyfill.Options
M.defaults = {
  --- Command that starts the server; nil: { binary }.
  cmd = nil, ---@type string[]?
  --- Server executable; nil: $PYFILL_BIN, else `pyfill` on PATH, else this checkout's
  --- target/release/pyfill.
  binary = nil, ---@type string?
  --- Server settings (camelCase keys of `M.server_keys`), sent at start and on changes.
  settings = {},
  filetypes = { 'python' },
  --- Files whose directory (searched upward) is the workspace root the server is started for.
  root_markers = { 'pyproject.toml', 'setup.py', 'setup.cfg', 'requirements.txt', '.git' },
  --- Ask for a suggestion as you type; false: only on `keymaps.trigger`.
  auto_trigger = true,
  --- Quiet time after a keystroke before asking (the extmark client; Neovim 0.12's own inline
  --- completion waits its fixed 200 ms).
  debounce_ms = 75,
  --- Use Neovim's `vim.lsp.inline_completion` where it exists (0.12+): true, false, or nil for
  --- auto. It has no manual trigger, so `auto_trigger = false` uses the plugin's own ghost text.
  native = nil, ---@type boolean?
  --- Offer the suggestion as a `textDocument/completion` item too (to nvim-cmp, omnifunc...).
  --- Off: completion plugins asking on every keystroke would compete with the ghost text.
  completion_items = false,
  --- Insert-mode keys; false disables one. Accept falls back to the key itself (a Tab) when no
  --- suggestion is shown, dismiss too.
  keymaps = {
    accept = '<Tab>',
    accept_word = '<M-Right>',
    accept_line = '<M-Down>',
    dismiss = '<C-]>',
    trigger = '<M-\\>',
  },
}

local function warn(message)
  vim.notify('pyfill: ' .. message, vim.log.levels.WARN)
end

--- `settings` with only the keys the server knows (a `{ pyfill = {...} }` wrapper unwrapped);
--- the others are dropped with a warning rather than sent and refused.
---@param settings table
---@return table
function M.server_settings(settings)
  if type(settings) ~= 'table' then
    warn('settings must be a table; ignored')
    return {}
  end
  if type(settings.pyfill) == 'table' then
    settings = settings.pyfill
  end
  local known, out = {}, {}
  for _, k in ipairs(M.server_keys) do
    known[k] = true
  end
  for k, v in pairs(settings) do
    if known[k] then
      out[k] = v
    else
      warn(('unknown server setting %q dropped (known: %s)'):format(k, table.concat(M.server_keys, ', ')))
    end
  end
  return out
end

--- The directory of this plugin's checkout root (`editors/neovim/lua/pyfill/config.lua` is four
--- levels below it), for the server built next to it.
local function repo_root()
  local source = debug.getinfo(1, 'S').source:gsub('^@', '')
  return vim.fn.fnamemodify(source, ':p:h:h:h:h:h')
end

--- The server executable to start when the options name none.
---@return string
function M.default_binary()
  if vim.env.PYFILL_BIN and vim.env.PYFILL_BIN ~= '' then
    return vim.env.PYFILL_BIN
  end
  if vim.fn.executable('pyfill') == 1 then
    return 'pyfill'
  end
  local built = repo_root() .. '/target/release/pyfill'
  if vim.fn.executable(built) == 1 then
    return built
  end
  return 'pyfill'
end

--- The defaults with `user` merged over them (keymaps key by key), checked.
---@param user table?
---@return pyfill.Options
function M.resolve(user)
  user = user or {}
  local names = { cmd = true, binary = true, native = true }
  for k in pairs(M.defaults) do
    names[k] = true
  end
  for k in pairs(user) do
    if not names[k] then
      warn(('unknown option %q ignored'):format(k))
    end
  end
  local opts = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), user)
  -- Lists replace the defaults whole (a deep merge would keep the defaults' extra entries).
  for _, k in ipairs({ 'cmd', 'filetypes', 'root_markers' }) do
    if user[k] ~= nil then
      opts[k] = user[k]
    end
  end
  opts.settings = M.server_settings(user.settings or {})
  if type(opts.debounce_ms) ~= 'number' or opts.debounce_ms < 0 then
    warn('debounce_ms must be a number >= 0; using ' .. M.defaults.debounce_ms)
    opts.debounce_ms = M.defaults.debounce_ms
  end
  if not opts.cmd then
    opts.cmd = { opts.binary or M.default_binary() }
  end
  return opts
end

return M
