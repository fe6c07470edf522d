--- The few Neovim APIs whose shape changed between 0.9 and 0.12, behind one name each.

local M = {}

M.uv = vim.uv or vim.loop

local method_calls = vim.fn.has('nvim-0.11') == 1

--- Sends a request; returns the request id, or nil when the client is gone.
---@return integer?
function M.request(client, method, params, handler, bufnr)
  local ok, id
  if method_calls then
    ok, id = client:request(method, params, handler, bufnr)
  else
    ok, id = client.request(method, params, handler, bufnr)
  end
  return ok and id or nil
end

function M.cancel_request(client, id)
  if method_calls then
    client:cancel_request(id)
  else
    client.cancel_request(id)
  end
end

function M.notify(client, method, params)
  if method_calls then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

--- Asks the server to shut down; `force`: kills it.
function M.stop(client, force)
  if method_calls then
    client:stop(force)
  else
    client.stop(force)
  end
end

function M.is_stopped(client)
  if method_calls then
    return client:is_stopped()
  end
  return client.is_stopped()
end

---@param filter table? as for vim.lsp.get_clients
function M.clients(filter)
  return (vim.lsp.get_clients or vim.lsp.get_active_clients)(filter)
end

--- Milliseconds on a monotonic clock.
function M.now_ms()
  return M.uv.hrtime() / 1e6
end

--- Virtual text can sit between characters (`virt_text_pos = 'inline'`).
M.has_inline_virt_text = vim.fn.has('nvim-0.10') == 1

--- Neovim draws LSP inline completions itself.
function M.has_native_inline_completion()
  return vim.lsp.inline_completion ~= nil
end

return M
