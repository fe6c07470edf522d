--- Draws and clears ghost text with extmarks (the plugin's own client, Neovim 0.9-0.11, or
--- 0.12 without auto-trigger). Knows nothing of requests; what to draw comes from `suggestion`.

local suggestion = require('pyfill.suggestion')
local compat = require('pyfill.compat')

local M = {}

M.namespace = vim.api.nvim_create_namespace('pyfill')

vim.api.nvim_set_hl(0, 'PyfillSuggestion', { link = 'Comment', default = true })

---@param bufnr integer
function M.clear(bufnr)
  if vim.api.nvim_buf_is_valid(bufnr) then
    vim.api.nvim_buf_clear_namespace(bufnr, M.namespace, 0, -1)
  end
end

--- Draws `s.ghost` at its cursor: the first line in the line, the others below it.
---@param bufnr integer
---@param s pyfill.Suggestion
function M.show(bufnr, s)
  M.clear(bufnr)
  local shown = suggestion.display(s.ghost, vim.bo[bufnr].tabstop)
  local at_end = s.replaced == '' and s.after == ''
  local opts = {
    virt_text = { { shown.first, 'PyfillSuggestion' } },
    virt_text_pos = suggestion.first_line_position(compat.has_inline_virt_text, at_end),
    hl_mode = 'combine',
    priority = 1000,
  }
  if #shown.rest > 0 then
    opts.virt_lines = {}
    for i, l in ipairs(shown.rest) do
      opts.virt_lines[i] = { { l, 'PyfillSuggestion' } }
    end
  end
  vim.api.nvim_buf_set_extmark(bufnr, M.namespace, s.row, s.col, opts)
end

return M
