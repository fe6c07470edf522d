--- `:checkhealth pyfill`: the Neovim, the server binary, the model, the running server.

local M = {}

function M.check()
  local h = vim.health
  local compat = require('pyfill.compat')
  h.start('pyfill')
  local pyfill = require('pyfill')
  local s = pyfill.status()
  local v = vim.version()
  if vim.fn.has('nvim-0.9') ~= 1 then
    h.error('Neovim 0.9 or newer is needed')
  elseif not pyfill.options() then
    h.warn('require("pyfill").setup() was not called')
  else
    local drawn = compat.has_inline_virt_text and '' or ' (overlay/end of line before 0.10)'
    h.ok(('Neovim %d.%d.%d: ghost text by %s%s'):format(v.major, v.minor, v.patch, s.ghost, drawn))
  end
  local options = pyfill.options()
  local cmd = options and options.cmd or { require('pyfill.config').default_binary() }
  if vim.fn.executable(cmd[1]) ~= 1 then
    h.error(
      ('server %q not found'):format(cmd[1]),
      { 'cargo build --release in the pyfill checkout', 'or setup({ binary = "/path/to/pyfill" })' }
    )
    return
  end
  h.ok('server: ' .. vim.fn.exepath(cmd[1]))
  local out = vim.fn.systemlist({ cmd[1], 'model', 'path' })
  local model = out[#out]
  if vim.v.shell_error == 0 and model and vim.fn.filereadable(model) == 1 then
    h.ok('default model: ' .. model)
  else
    h.warn(
      'default model not fetched (' .. tostring(model) .. ')',
      { ':PyfillFetchModel, or `pyfill model fetch`, or the `model` setting' }
    )
  end
  if s.state == 'ready' then
    h.ok('server ready: ' .. s.message)
  elseif s.state == 'error' then
    h.error('server: ' .. s.message)
  else
    h.info(('server %s%s'):format(s.state, s.message ~= '' and (': ' .. s.message) or ''))
  end
end

return M
