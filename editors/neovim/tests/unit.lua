-- Unit tests of the pure modules, headless: nvim --headless -l tests/unit.lua
-- Each case states its input and the expected output side by side; `|` marks the cursor.

local here = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h')
vim.opt.rtp:prepend(vim.fn.fnamemodify(here, ':h'))

local suggestion = require('pyfill.suggestion')
local config = require('pyfill.config')

local failures, passed = {}, 0

local function check(name, got, want)
  if vim.deep_equal(got, want) then
    passed = passed + 1
  else
    failures[#failures + 1] = ('%s\n    want %s\n    got  %s'):format(name, vim.inspect(want), vim.inspect(got))
  end
end

--- `line` with a `|` for the cursor -> the cursor table from_item takes.
local function at(line, row)
  local col = line:find('|', 1, true) - 1
  return { row = row or 0, col = col, line = line:sub(1, col) .. line:sub(col + 2) }
end

local function item(text, s, e, row)
  if not s then
    return { insertText = text }
  end
  row = row or 0
  return {
    insertText = text,
    range = { start = { line = row, character = s }, ['end'] = { line = row, character = e } },
  }
end

-- byte_col / encoded_col: "aé😀b" is a(1 byte) é(2) 😀(4, a surrogate pair in UTF-16) b(1).
local line = 'aé😀b'
for _, c in ipairs({
  { 'utf-16', 0, 0 },
  { 'utf-16', 1, 1 },
  { 'utf-16', 2, 3 },
  { 'utf-16', 3, 3 },
  { 'utf-16', 4, 7 },
  { 'utf-16', 5, 8 },
  { 'utf-16', 99, 8 },
  { 'utf-32', 2, 3 },
  { 'utf-32', 3, 7 },
  { 'utf-32', 4, 8 },
  { 'utf-8', 3, 3 },
  { 'utf-8', 7, 7 },
}) do
  check(('byte_col %s %d'):format(c[1], c[2]), suggestion.byte_col(line, c[2], c[1]), c[3])
end
for _, c in ipairs({
  { 'utf-16', 0, 0 },
  { 'utf-16', 1, 1 },
  { 'utf-16', 3, 2 },
  { 'utf-16', 7, 4 },
  { 'utf-16', 8, 5 },
  { 'utf-32', 7, 3 },
  { 'utf-8', 7, 7 },
  { 'utf-16', 2, 2 },
}) do
  check(('encoded_col %s %d'):format(c[1], c[2]), suggestion.encoded_col(line, c[2], c[1]), c[3])
end
for _, enc in ipairs({ 'utf-8', 'utf-16', 'utf-32' }) do
  for _, b in ipairs({ 0, 1, 3, 7, 8 }) do
    check('round trip ' .. enc .. ' ' .. b, suggestion.byte_col(line, suggestion.encoded_col(line, b, enc), enc), b)
  end
end

check('lines', suggestion.lines('a\n\nb\n'), { 'a', '', 'b', '' })
check('lines, no break', suggestion.lines('abc'), { 'abc' })

-- from_item: the ghost is the item's text less what its range already holds before the cursor.
local s = suggestion.from_item(item(' * radius ** 2'), at('    return math.pi|'), 'utf-16')
check('no range: ghost at cursor', s and s.ghost, ' * radius ** 2')
check(
  'no range: replaces nothing',
  s and { s.start_col, s.col, s.end_col, s.before, s.replaced, s.after },
  { 18, 18, 18, '    return math.pi', '', '' }
)
s = suggestion.from_item(item('math.pi * r', 11, 15), at('    return math|'), 'utf-16')
check('range from the half-typed word', s and s.ghost, '.pi * r')
check('range start kept', s and s.start_col, 11)
check(
  'text not starting with the typed word',
  suggestion.from_item(item('foo', 11, 15), at('    return math|'), 'utf-16'),
  nil
)
check('range on another line', suggestion.from_item(item('x', 0, 0, 3), at('ab|'), 'utf-16'), nil)
check('range after the cursor', suggestion.from_item(item('x', 3, 3), at('ab|c'), 'utf-16'), nil)
check('snippet', suggestion.from_item({ insertText = { kind = 'snippet', value = 'x' } }, at('|'), 'utf-16'), nil)
check('nothing left to insert', suggestion.from_item(item('math', 11, 15), at('    return math|'), 'utf-16'), nil)
-- UTF-16 range after non-ASCII: "é = |" (é is 1 UTF-16 unit, 2 bytes)
s = suggestion.from_item(item('1', 4, 4), at('é = |'), 'utf-16')
check('utf-16 range after é', s and { s.col, s.ghost }, { 5, '1' })
s = suggestion.from_item(item('x) + 1', 6, 7), at('print(|)'), 'utf-8')
check('range over the text after the cursor', s and { s.ghost, s.replaced, s.after }, { 'x) + 1', ')', '' })

-- typed_along: typing what the ghost shows keeps the rest.
local base = suggestion.from_item(item(' * radius ** 2'), at('    return math.pi|'), 'utf-16')
local rest = suggestion.typed_along(base, at('    return math.pi *|'))
check('typed along', rest and { rest.ghost, rest.col, rest.before }, { ' radius ** 2', 20, '    return math.pi *' })
check('typed something else', suggestion.typed_along(base, at('    return math.pi +|')), nil)
check('typed all of it', suggestion.typed_along(base, at('    return math.pi * radius ** 2|')), nil)
check('moved to another row', suggestion.typed_along(base, at('    return math.pi *|', 1)), nil)
check('moved left', suggestion.typed_along(base, at('    return math.p|i')), nil)
check('no change', suggestion.typed_along(base, at('    return math.pi|')).ghost, ' * radius ** 2')
local inside = suggestion.from_item(item('x) + 1', 6, 7), at('print(|)'), 'utf-8')
rest = suggestion.typed_along(inside, at('print(x|)'))
check('typed along before a replaced ")"', rest and { rest.ghost, rest.end_col }, { ') + 1', 8 })

-- next_word / next_line
for _, c in ipairs({
  { ' * radius ** 2', ' *' },
  { 'radius ** 2', 'radius' },
  { '** 2', '**' },
  { '\n    return x', '\n    return' },
  { '   ', '   ' },
  { 'héllo wörld', 'héllo' },
  { '(a, b)', '(' },
}) do
  check('next_word ' .. vim.inspect(c[1]), suggestion.next_word(c[1]), c[2])
end
for _, c in ipairs({
  { ' * radius\n    return x', ' * radius' },
  { '\n    return x\n', '\n    return x' },
  { 'one line', 'one line' },
}) do
  check('next_line ' .. vim.inspect(c[1]), suggestion.next_line(c[1]), c[2])
end

-- edit: the whole text replaces the range's rest; a piece inserts at the cursor.
base = suggestion.from_item(item('x) + 1', 6, 7), at('print(|)'), 'utf-8')
check(
  'edit whole',
  suggestion.edit(base, base.ghost),
  { row = 0, start_col = 6, end_col = 7, lines = { 'x) + 1' }, cursor = { 0, 12 } }
)
check(
  'edit piece',
  suggestion.edit(base, 'x'),
  { row = 0, start_col = 6, end_col = 6, lines = { 'x' }, cursor = { 0, 7 } }
)
base = suggestion.from_item(item(':\n    return a + b'), at('def add(a, b)|', 4), 'utf-16')
check(
  'edit multi-line',
  suggestion.edit(base, base.ghost),
  { row = 4, start_col = 13, end_col = 13, lines = { ':', '    return a + b' }, cursor = { 5, 16 } }
)

-- display
check('display', suggestion.display('a\n\tb\n', 4), { first = 'a', rest = { '    b', '' } })
check('display one line', suggestion.display(' * 2', 8), { first = ' * 2', rest = {} })
check('position 0.10+', suggestion.first_line_position(true, false), 'inline')
check('position 0.9 at end', suggestion.first_line_position(false, true), 'overlay')
check('position 0.9 mid-line', suggestion.first_line_position(false, false), 'eol')

-- config: only the server's keys are sent; the wrapper is unwrapped.
local warned = {}
vim.notify = function(msg)
  warned[#warned + 1] = msg
end
check(
  'server settings filtered',
  config.server_settings({ model = '/m.gguf', maxTokens = 32, modle = 'typo' }),
  { model = '/m.gguf', maxTokens = 32 }
)
check('unknown key warned', #warned, 1)
check('wrapper unwrapped', config.server_settings({ pyfill = { enable = false } }), { enable = false })
local opts = config.resolve({ cmd = { '/bin/true' }, root_markers = { '.git' }, keymaps = { accept_word = false } })
check('lists replace the defaults', opts.root_markers, { '.git' })
check('keymaps merge key by key', { opts.keymaps.accept, opts.keymaps.accept_word }, { '<Tab>', false })
check('binary becomes cmd', config.resolve({ binary = '/x/pyfill' }).cmd, { '/x/pyfill' })

-- status: pyfill/status is taken as is; without it the state is inferred from progress and messages.
local status = require('pyfill.status')
status.started(1)
status.on_progress(1, { token = 't', value = { kind = 'begin', title = 'pyfill', message = 'loading /m.gguf' } })
check('progress begin: loading', status.get(1).state, 'loading')
status.on_progress(1, { token = 't', value = { kind = 'end', message = 'model ready: /m.gguf (qwen2)' } })
check('progress end: ready', { status.get(1).state, status.get(1).reported }, { 'ready', false })
status.started(2)
status.on_message(2, { type = 1, message = 'pyfill: no model at /x.gguf: run `pyfill model fetch`, or set ...' })
check('error message: model missing', { status.get(2).state, status.get(2).model_missing }, { 'error', true })
check(
  'describe: the fetch hint',
  vim.tbl_contains(
    status.describe({ client_id = 2, cmd = { 'pyfill' }, ghost = 'x', enabled = true }),
    '  the default model is not fetched: run :PyfillFetchModel (or `pyfill model fetch`)'
  ),
  true
)
status.started(3)
status.on_status(3, { state = 'loading', message = 'loading', percentage = 40 })
check(
  'pyfill/status loading',
  { status.get(3).state, status.get(3).percentage, status.get(3).reported },
  { 'loading', 40, true }
)
status.on_message(3, { type = 3, message = 'model ready: /m.gguf' })
check('pyfill/status wins over inference', status.get(3).state, 'loading')
status.on_status(3, { state = 'ready', message = 'model ready' })
check('pyfill/status ready clears the percentage', { status.get(3).state, status.get(3).percentage }, { 'ready', nil })
status.on_status(3, { state = 'error', message = 'no model', modelMissing = true })
check('pyfill/status modelMissing', status.get(3).model_missing, true)
check(
  'describe: first line',
  status.describe({ client_id = 3, cmd = { 'pyfill' }, ghost = 'x', enabled = true })[1],
  'pyfill: error - no model'
)
check('newest client', status.get().message, 'no model')
status.record_latency(123)
check('latency', status.latency().ms, 123)
check('bad params ignored', pcall(status.on_status, 3, vim.NIL), true)

if #failures > 0 then
  io.stderr:write(('unit: %d passed, %d FAILED\n'):format(passed, #failures))
  for _, f in ipairs(failures) do
    io.stderr:write('  FAIL ' .. f .. '\n')
  end
  os.exit(1)
end
io.stdout:write(('unit: %d passed\n'):format(passed))
os.exit(0)
