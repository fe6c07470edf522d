-- The whole config test.sh starts Neovim with (-u): this checkout's plugin, the server binary and
-- model named by the environment, and the read-back helpers as the global `pyfill_probe`.
local tests = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h')
vim.opt.rtp:prepend(vim.fn.fnamemodify(tests, ':h'))
vim.o.swapfile = false
vim.o.shortmess = vim.o.shortmess .. 'I'

_G.pyfill_probe = dofile(tests .. '/probe.lua')

require('pyfill').setup({
  binary = vim.env.PYFILL_TEST_BIN,
  settings = { model = vim.env.PYFILL_TEST_MODEL },
  debounce_ms = 50,
})
