//! The model's tokenizer, built from the GGUF metadata alone (`tokenizer.ggml.*`): byte-level BPE
//! with the pre-tokenizer regex llama.cpp uses for `tokenizer.ggml.pre`, so ids equal llama.cpp's.
//! Also the per-token raw bytes, for exact streaming detokenisation.

use std::path::Path;

use ahash::AHashMap;
use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::error::{Error, Result};
use super::gguf::GgufFile;

/// Token type codes of `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`).
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// llama.cpp's pre-tokenizer regexes (`llama-vocab.cpp`), by `tokenizer.ggml.pre` value.
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const DEEPSEEK_CODER_REGEXES: &[&str] = &[
    r"[\r\n]",
    r"\s?\p{L}+",
    r"\s?\p{P}+",
    r"[一-龥ࠀ-一가-퟿]+",
    r"\p{N}",
];

#[derive(Debug, Clone)]
pub struct SpecialToken {
    pub id: u32,
    pub content: String,
    /// Control tokens (type 3) are only recognised in text when asked; user-defined ones always.
    pub control: bool,
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Raw bytes of every token (byte-level alphabet undone; specials as their text).
    token_bytes: Vec<Vec<u8>>,
    specials: Vec<SpecialToken>,
    token_types: Vec<i32>,
    eos: Option<u32>,
    eot: Option<u32>,
    /// Prepended to every prompt when the model says so (`tokenizer.ggml.add_bos_token`).
    bos: Option<u32>,
    fim: FimIds,
    /// Made up by [`Tokenizer::estimate`], not the model's.
    estimated: bool,
}

/// The tokens that end or start generation.
struct Ends {
    eos: Option<u32>,
    eot: Option<u32>,
    bos: Option<u32>,
}

/// Infilling tokens the GGUF names in its metadata (`tokenizer.ggml.fim_*_token_id`, or the
/// older `prefix`/`suffix`/`middle` keys).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FimIds {
    pub prefix: Option<u32>,
    pub suffix: Option<u32>,
    pub middle: Option<u32>,
    pub repo: Option<u32>,
    pub file_separator: Option<u32>,
}

impl Tokenizer {
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let path = gguf.path().to_owned();
        let fail = |reason: String| Error::Tokenizer {
            path: path.clone(),
            reason,
        };
        let model = gguf.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(fail(format!(
                "tokenizer model '{model}' is not supported (only byte-level BPE, 'gpt2')"
            )));
        }
        let pre = gguf.string("tokenizer.ggml.pre").unwrap_or("default");
        let tokens: Vec<String> = strings(gguf, "tokenizer.ggml.tokens")?;
        let merges: Vec<String> = strings(gguf, "tokenizer.ggml.merges")?;
        let token_types: Vec<i32> = match gguf.array("tokenizer.ggml.token_type") {
            Ok(v) => v
                .iter()
                .map(|t| t.to_i32().map_err(|e| fail(super::error::message(&e))))
                .collect::<Result<_>>()?,
            Err(Error::MissingMetadata { .. }) => vec![1; tokens.len()],
            Err(e) => return Err(e),
        };
        if token_types.len() != tokens.len() {
            return Err(fail(format!(
                "{} token types for {} tokens",
                token_types.len(),
                tokens.len()
            )));
        }
        if tokens.is_empty() {
            return Err(fail("the vocabulary is empty".into()));
        }

        let eos = gguf
            .opt_usize("tokenizer.ggml.eos_token_id")?
            .map(|v| v as u32);
        let eot = gguf
            .opt_usize("tokenizer.ggml.eot_token_id")?
            .map(|v| v as u32);
        let bos = match gguf.opt_bool("tokenizer.ggml.add_bos_token")? {
            Some(true) => gguf
                .opt_usize("tokenizer.ggml.bos_token_id")?
                .map(|v| v as u32),
            _ => None,
        };
        let vocab = tokens.len();
        let id = |keys: &[&str]| -> Result<Option<u32>> {
            for key in keys {
                if let Some(v) = gguf.opt_usize(key)?
                    && v < vocab
                {
                    return Ok(Some(v as u32));
                }
            }
            Ok(None)
        };
        let fim = FimIds {
            prefix: id(&[
                "tokenizer.ggml.fim_pre_token_id",
                "tokenizer.ggml.prefix_token_id",
            ])?,
            suffix: id(&[
                "tokenizer.ggml.fim_suf_token_id",
                "tokenizer.ggml.suffix_token_id",
            ])?,
            middle: id(&[
                "tokenizer.ggml.fim_mid_token_id",
                "tokenizer.ggml.middle_token_id",
            ])?,
            repo: id(&["tokenizer.ggml.fim_rep_token_id"])?,
            file_separator: id(&["tokenizer.ggml.fim_sep_token_id"])?,
        };
        Self::from_parts(
            &tokens,
            merges,
            token_types,
            pre,
            Ends { eos, eot, bos },
            fim,
        )
        .map_err(fail)
    }

    /// A tokenizer from its parts: the vocabulary in id order, BPE merges (`"a b"`), llama.cpp
    /// token types, the pre-tokenizer's `tokenizer.ggml.pre` name.
    fn from_parts(
        tokens: &[String],
        merges: Vec<String>,
        token_types: Vec<i32>,
        pre: &str,
        ends: Ends,
        fim: FimIds,
    ) -> std::result::Result<Self, String> {
        let Ends { eos, eot, bos } = ends;
        let mut vocab: AHashMap<String, u32> = AHashMap::with_capacity(tokens.len());
        for (id, tok) in tokens.iter().enumerate() {
            vocab.entry(tok.clone()).or_insert(id as u32);
        }
        let merges: Vec<(String, String)> = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| format!("malformed merge '{m}'"))
            })
            .collect::<std::result::Result<_, String>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| e.to_string())?;

        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        let specials: Vec<SpecialToken> = token_types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == TYPE_CONTROL || **t == TYPE_USER_DEFINED)
            .map(|(id, t)| SpecialToken {
                id: id as u32,
                content: tokens[id].clone(),
                control: *t == TYPE_CONTROL,
            })
            .collect();
        inner
            .add_special_tokens(
                specials
                    .iter()
                    .map(|s| AddedToken::from(s.content.clone(), true))
                    .collect::<Vec<_>>(),
            )
            .map_err(|e| e.to_string())?;
        // Text is always literal to the inner tokenizer; `encode` finds special tokens itself.
        inner.set_encode_special_tokens(true);

        let byte_of = unicode_to_byte();
        let token_bytes = tokens
            .iter()
            .zip(&token_types)
            .map(|(tok, ty)| {
                if *ty == TYPE_CONTROL || *ty == TYPE_USER_DEFINED {
                    return tok.as_bytes().to_vec();
                }
                tok.chars()
                    .map(|c| byte_of.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .unwrap_or_else(|| tok.as_bytes().to_vec())
            })
            .collect();

        Ok(Self {
            inner,
            token_bytes,
            specials,
            token_types,
            eos,
            eot,
            bos,
            fim,
            estimated: false,
        })
    }

    /// A Hugging Face `tokenizer.json` (byte-level BPE, as code models' are), for a remote
    /// backend's budgets when no GGUF is at hand. Added tokens marked special are control
    /// tokens; `<|endoftext|>` (or `</s>`) ends generation.
    pub fn from_json(path: &Path) -> Result<Self> {
        let fail = |reason: String| Error::Tokenizer {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| fail(format!("not JSON: {e}")))?;
        let model = &json["model"];
        // Byte-level BPE only (GPT-2's byte alphabet): SentencePiece-style BPE (`▁` pieces,
        // byte fallback) would lose every space and newline here.
        let byte_level = json["decoder"]["type"].as_str() == Some("ByteLevel")
            || json["pre_tokenizer"].to_string().contains("\"ByteLevel\"");
        if model["type"].as_str() != Some("BPE")
            || model["byte_fallback"].as_bool() == Some(true)
            || !byte_level
        {
            return Err(fail("only byte-level BPE tokenizers are supported".into()));
        }
        let vocab = model["vocab"]
            .as_object()
            .ok_or_else(|| fail("no model.vocab".into()))?;
        let mut entries: Vec<(u32, String, i32)> = Vec::with_capacity(vocab.len());
        for (token, id) in vocab {
            let id = id
                .as_u64()
                .ok_or_else(|| fail(format!("bad id for {token}")))?;
            entries.push((id as u32, token.clone(), 1));
        }
        for added in json["added_tokens"].as_array().into_iter().flatten() {
            let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str())
            else {
                return Err(fail("malformed added_tokens entry".into()));
            };
            let ty = if added["special"].as_bool() == Some(true) {
                TYPE_CONTROL
            } else {
                TYPE_USER_DEFINED
            };
            entries.retain(|(i, _, _)| *i != id as u32);
            entries.push((id as u32, content.to_owned(), ty));
        }
        entries.sort_by_key(|(id, _, _)| *id);
        if entries
            .iter()
            .enumerate()
            .any(|(i, (id, _, _))| *id as usize != i)
        {
            return Err(fail("token ids are not 0..n without gaps".into()));
        }
        let merges = model["merges"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| match m {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Array(pair) => match (pair.first(), pair.get(1)) {
                    (Some(a), Some(b)) => Some(format!("{} {}", a.as_str()?, b.as_str()?)),
                    _ => None,
                },
                _ => None,
            })
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| fail("malformed merges".into()))?;
        // The pre-tokenizer, told by its regex: digits one by one (Qwen2) or in threes
        // (Llama 3), else GPT-2's.
        let pre_text = json["pre_tokenizer"].to_string();
        let pre = if pre_text.contains(r"\p{N}{1,3}") {
            "llama3"
        } else if pre_text.contains(r"\p{N}|") {
            "qwen2"
        } else {
            "gpt2"
        };
        let tokens: Vec<String> = entries.iter().map(|(_, t, _)| t.clone()).collect();
        let types: Vec<i32> = entries.iter().map(|(_, _, ty)| *ty).collect();
        let find = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| tokens.iter().position(|t| t == n).map(|i| i as u32))
        };
        let ends = Ends {
            eos: find(&["<|endoftext|>", "</s>", "<|end_of_text|>"]),
            eot: find(&["<|im_end|>", "<|eot_id|>"]),
            bos: None,
        };
        let fim = FimIds {
            prefix: find(&["<|fim_prefix|>", "<fim_prefix>"]),
            suffix: find(&["<|fim_suffix|>", "<fim_suffix>"]),
            middle: find(&["<|fim_middle|>", "<fim_middle>"]),
            repo: find(&["<|repo_name|>", "<repo_name>"]),
            file_separator: find(&["<|file_sep|>", "<file_sep>"]),
        };
        Self::from_parts(&tokens, merges, types, pre, ends, fim).map_err(fail)
    }

    /// No real tokenizer: one token per byte, plus Qwen2.5-Coder's special tokens (the default
    /// model's family). Budgets then count bytes, about a third of the real tokens they allow:
    /// prompts stay well inside any server's context, with less of the file than a real
    /// tokenizer would fit.
    pub fn estimate() -> Self {
        const SPECIALS: &[&str] = &[
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<|fim_prefix|>",
            "<|fim_middle|>",
            "<|fim_suffix|>",
            "<|fim_pad|>",
            "<|repo_name|>",
            "<|file_sep|>",
        ];
        let byte_chars = unicode_to_byte();
        let mut bytes: Vec<(u8, char)> = byte_chars.iter().map(|(c, b)| (*b, *c)).collect();
        bytes.sort_unstable();
        let mut tokens: Vec<String> = bytes.into_iter().map(|(_, c)| c.to_string()).collect();
        let mut types = vec![1; tokens.len()];
        tokens.extend(SPECIALS.iter().map(|s| (*s).to_owned()));
        types.extend(SPECIALS.iter().map(|_| TYPE_CONTROL));
        let id = |name: &str| tokens.iter().position(|t| t == name).map(|i| i as u32);
        let ends = Ends {
            eos: id("<|endoftext|>"),
            eot: id("<|im_end|>"),
            bos: None,
        };
        let fim = FimIds {
            prefix: id("<|fim_prefix|>"),
            suffix: id("<|fim_suffix|>"),
            middle: id("<|fim_middle|>"),
            repo: id("<|repo_name|>"),
            file_separator: id("<|file_sep|>"),
        };
        let mut tokenizer = Self::from_parts(&tokens, Vec::new(), types, "gpt2", ends, fim)
            .unwrap_or_else(|e| unreachable!("the byte tokenizer is well formed: {e}"));
        tokenizer.estimated = true;
        tokenizer
    }

    /// Whether this is [`Tokenizer::estimate`] (token counts are byte counts).
    pub fn is_estimate(&self) -> bool {
        self.estimated
    }

    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// Tokenises `text`. With `parse_special`, control tokens written in the text (e.g.
    /// `<|fim_prefix|>`) become their ids; user-defined special tokens always do (as llama.cpp).
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let next = self
                .specials
                .iter()
                .filter(|s| parse_special || !s.control)
                .filter_map(|s| rest.find(&s.content).map(|at| (at, s)))
                .min_by_key(|(at, s)| (*at, std::cmp::Reverse(s.content.len())));
            match next {
                Some((at, special)) => {
                    self.encode_literal(&rest[..at], &mut ids)?;
                    ids.push(special.id);
                    rest = &rest[at + special.content.len()..];
                }
                None => {
                    self.encode_literal(rest, &mut ids)?;
                    rest = "";
                }
            }
        }
        Ok(ids)
    }

    fn encode_literal(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| Error::Encode(e.to_string()))?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }

    /// Decodes ids to text exactly (invalid UTF-8 from a partial sequence becomes U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for id in ids {
            bytes.extend_from_slice(self.token_bytes(*id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The token every prompt starts with, for models that want one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The infilling tokens the file's metadata names.
    pub fn fim_ids(&self) -> FimIds {
        self.fim
    }

    pub fn special(&self, content: &str) -> Option<u32> {
        self.specials
            .iter()
            .find(|s| s.content == content)
            .map(|s| s.id)
    }

    /// Whether a token is plain text (not a control or user-defined special token).
    pub fn is_text(&self, id: u32) -> bool {
        !matches!(
            self.token_types.get(id as usize),
            Some(&TYPE_CONTROL | &TYPE_USER_DEFINED)
        ) && !self.token_bytes(id).is_empty()
    }

    /// How many tokens at the end of `prompt` to take back and let the model write again
    /// (token healing): the tokens of the last, possibly half-typed, word. A prompt that ends
    /// mid-word ends on a token boundary the tokenizer would not have put there (`curr` of
    /// `current`), and a model continuing after it skips or repeats letters. At most 4 tokens
    /// and 24 bytes, never across a line break or a special token.
    pub fn healing_len(&self, prompt: &[u32]) -> usize {
        let mut n = 0;
        let mut bytes = 0;
        for &id in prompt.iter().rev().take(4) {
            let b = self.token_bytes(id);
            if !self.is_text(id) || b.contains(&b'\n') || bytes + b.len() > 24 {
                break;
            }
            n += 1;
            bytes += b.len();
            // A token that starts with a space or punctuation starts the word.
            if !b[0].is_ascii_alphanumeric() && b[0] != b'_' && b[0] < 0x80 {
                break;
            }
        }
        n
    }

    /// Whether generating this token ends the text: eos/eot, or any control token (`<|endoftext|>`,
    /// `<|fim_pad|>`, `<|file_sep|>`, ... none of them is code).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        Some(id) == self.eos
            || Some(id) == self.eot
            || self.token_types.get(id as usize) == Some(&TYPE_CONTROL)
    }
}

fn strings(gguf: &GgufFile, key: &str) -> Result<Vec<String>> {
    gguf.array(key)?
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(Error::BadMetadata {
                path: gguf.path().to_owned(),
                key: key.to_owned(),
                reason: format!("expected strings, found {:?}", other.value_type()),
            }),
        })
        .collect()
}

fn pre_tokenizer(pre: &str) -> std::result::Result<PreTokenizerWrapper, String> {
    let split = |re: &str| -> std::result::Result<PreTokenizerWrapper, String> {
        Split::new(
            SplitPattern::Regex(re.to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map(PreTokenizerWrapper::Split)
        .map_err(|e| format!("bad pre-tokenizer regex: {e}"))
    };
    let bytes_only = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false));
    let seq = |mut parts: Vec<PreTokenizerWrapper>| {
        parts.push(bytes_only.clone());
        PreTokenizerWrapper::Sequence(Sequence::new(parts))
    };
    Ok(match pre {
        "qwen2" => seq(vec![split(QWEN2_REGEX)?]),
        "llama3" | "llama-bpe" | "llama-v3" | "smaug-bpe" => seq(vec![split(LLAMA3_REGEX)?]),
        "deepseek-coder" => seq(DEEPSEEK_CODER_REGEXES
            .iter()
            .map(|r| split(r))
            .collect::<std::result::Result<_, _>>()?),
        "starcoder" | "refact" => seq(vec![split(r"\p{N}")?, split(GPT2_REGEX)?]),
        "default" | "gpt2" | "gpt-2" | "phi-2" | "jina-v2-code" => seq(vec![split(GPT2_REGEX)?]),
        other => return Err(format!("pre-tokenizer '{other}' is not supported")),
    })
}

/// Inverse of GPT-2's byte-to-unicode table: printable bytes map to themselves, the others to
/// code points from U+0100 in byte order.
fn unicode_to_byte() -> AHashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut map = AHashMap::with_capacity(256);
    let mut next = 256u32;
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or(char::REPLACEMENT_CHARACTER);
            next += 1;
            c
        };
        map.insert(c, b);
    }
    map
}

/// Turns a stream of tokens into text, holding back bytes of an unfinished UTF-8 character.
#[derive(Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // Bytes that can never become valid: flush them lossily.
            Err(_) => self.pending.len(),
        };
        let out: Vec<u8> = self.pending.drain(..valid).collect();
        String::from_utf8_lossy(&out).into_owned()
    }
}
