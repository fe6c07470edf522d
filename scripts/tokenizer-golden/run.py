"""Regenerates tests/fixtures/tokenizer/qwen2_golden.json with llama.cpp's llama-tokenize.

Needs: pip install gguf; LLAMA_TOKENIZE pointing at a llama-tokenize binary; the default model.
"""
import json, os, subprocess, sys, hashlib
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cases import CASES
import gguf

B = os.environ.get('LLAMA_TOKENIZE', os.path.expanduser('~/.cache/pyfill/llama.cpp-build/bin/llama-tokenize'))
M = os.environ.get('PYFILL_MODEL', os.path.expanduser('~/.cache/pyfill/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf'))
OUT = os.path.join(HERE, '..', '..', 'tests', 'fixtures', 'tokenizer', 'qwen2_golden.json')

# vocab for round-trip decoding (GPT-2 byte-level unicode mapping)
r = gguf.GGUFReader(M)
def field(name):
    return r.fields[name]
tf = field('tokenizer.ggml.tokens')
tokens = [bytes(tf.parts[i]).decode('utf-8') for i in tf.data]
ttf = field('tokenizer.ggml.token_type')
ttypes = [int(ttf.parts[i][0]) for i in ttf.data]
pre = bytes(field('tokenizer.ggml.pre').parts[-1]).decode()
print('vocab', len(tokens), 'pre', pre, file=sys.stderr)
bs = list(range(ord("!"), ord("~")+1)) + list(range(ord("¡"), ord("¬")+1)) + list(range(ord("®"), ord("ÿ")+1))
cs = bs[:]; n = 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256+n); n += 1
u2b = {chr(c): b for b, c in zip(bs, cs)}
def decode(ids):
    out = b''
    for i in ids:
        t = tokens[i]
        if ttypes[i] == 1:  # normal -> byte-level
            out += bytes(u2b[ch] for ch in t)
        else:               # control / user-defined: raw text
            out += t.encode('utf-8')
    return out

import tempfile
IN = tempfile.mkdtemp()
cmd_template = None
results = []
for idx, (name, ps, text) in enumerate(CASES):
    path = os.path.join(IN, f'{idx:02d}_{name}.txt')
    data = text.encode('utf-8')
    with open(path, 'wb') as f:
        f.write(data)
    cmd = ['nice', '-n', '19', B, '-m', M, '--ids', '--log-disable', '--no-bos', '--no-escape']
    cmd += [] if ps else ['--no-parse-special']  # llama-tokenize parses special tokens by default
    cmd += ['-f', path]
    p = subprocess.run(cmd, capture_output=True)
    if p.returncode != 0:
        sys.exit(f'{name}: rc={p.returncode} stderr={p.stderr[-2000:]!r}')
    lines = p.stdout.decode().strip().splitlines()
    assert len(lines) == 1, (name, lines)
    ids = json.loads(lines[0])  # "[1, 2, 3]" is valid JSON too
    assert ids and all(isinstance(i, int) for i in ids), name
    rt = decode(ids)
    specials = [(i, tokens[i]) for i in ids if ttypes[i] != 1]
    print(f'{idx:2d} {name:40s} ps={ps!s:5} bytes={len(data):5d} ids={len(ids):4d} roundtrip={rt == data} specials={specials}', file=sys.stderr)
    assert rt == data, (name, rt, data)
    if p.stderr.strip():
        print('   stderr:', p.stderr[:300], file=sys.stderr)
    results.append({'name': name, 'parse_special': ps, 'text': text, 'ids': ids})

doc = {
    'model_sha256': '1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32',
    'tool': 'llama.cpp llama-tokenize (llama-cpp-python 0.3.36 vendor)',
    'cases': results,
}
# compact ids per case, one key per line for readable diffs
parts = ['{',
         f'  "model_sha256": {json.dumps(doc["model_sha256"])},',
         f'  "tool": {json.dumps(doc["tool"])},',
         '  "cases": [']
for k, c in enumerate(results):
    parts.append('    {')
    parts.append(f'      "name": {json.dumps(c["name"])},')
    parts.append(f'      "parse_special": {json.dumps(c["parse_special"])},')
    parts.append(f'      "text": {json.dumps(c["text"], ensure_ascii=False)},')
    parts.append(f'      "ids": {json.dumps(c["ids"])}')
    parts.append('    }' + (',' if k < len(results) - 1 else ''))
parts += ['  ]', '}']
s = '\n'.join(parts) + '\n'
assert json.loads(s) == doc
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, 'w', encoding='utf-8') as f:
    f.write(s)
print('wrote', OUT, len(s), 'bytes', file=sys.stderr)
