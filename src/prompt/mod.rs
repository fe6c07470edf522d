//! Model family -> fill-in-the-middle template and token budget. Pure: text in, token ids out
//! (the tokenizer is data here). Special tokens are inserted as ids, never parsed from the user's
//! text, so a file that contains `<|fim_prefix|>` literally cannot break the prompt.

use crate::engine::{Result, Tokenizer};

/// How a model wants to be asked for the text between a prefix and a suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    /// `<PREFIX>prefix<SUFFIX>suffix<MIDDLE>`, with the model's own marker tokens (Qwen2.5-Coder,
    /// DeepSeek-Coder, StarCoder).
    Fim(FimMarkers),
    /// No infilling tokens (the phi family): the model continues the prefix.
    PrefixOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FimMarkers {
    pub name: &'static str,
    pub prefix: u32,
    pub suffix: u32,
    pub middle: u32,
}

/// Marker token texts per family: name, prefix, suffix, middle.
const FIM_FAMILIES: &[(&str, &str, &str, &str)] = &[
    (
        "qwen2.5-coder",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
    ),
    (
        "deepseek-coder",
        "<｜fim▁begin｜>",
        "<｜fim▁hole｜>",
        "<｜fim▁end｜>",
    ),
    ("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
];

impl Family {
    /// Recognises the family from the special tokens the tokenizer has.
    pub fn detect(tokenizer: &Tokenizer) -> Self {
        FIM_FAMILIES
            .iter()
            .find_map(|(name, p, s, m)| {
                Some(Family::Fim(FimMarkers {
                    name,
                    prefix: tokenizer.special(p)?,
                    suffix: tokenizer.special(s)?,
                    middle: tokenizer.special(m)?,
                }))
            })
            .unwrap_or(Family::PrefixOnly)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Family::Fim(m) => m.name,
            Family::PrefixOnly => "prefix-only",
        }
    }
}

/// How many tokens of text before and after the cursor the prompt may hold.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub prefix_tokens: usize,
    pub suffix_tokens: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            prefix_tokens: 1024,
            suffix_tokens: 256,
        }
    }
}

/// Token ids asking `family` for the text between `prefix` and `suffix`, each side cut at line
/// boundaries to fit the budget (the lines nearest the cursor are kept).
pub fn build(
    tokenizer: &Tokenizer,
    family: &Family,
    prefix: &str,
    suffix: &str,
    budget: Budget,
) -> Result<Vec<u32>> {
    let prefix = window_before(tokenizer, prefix, budget.prefix_tokens)?;
    let prefix_ids = tokenizer.encode(prefix, false)?;
    let mut ids: Vec<u32> = tokenizer.bos().into_iter().collect();
    Ok(match family {
        Family::PrefixOnly => {
            ids.extend(prefix_ids);
            ids
        }
        Family::Fim(m) => {
            let suffix = window_after(tokenizer, suffix, budget.suffix_tokens)?;
            let suffix_ids = tokenizer.encode(suffix, false)?;
            ids.reserve(prefix_ids.len() + suffix_ids.len() + 3);
            ids.push(m.prefix);
            ids.extend(prefix_ids);
            ids.push(m.suffix);
            ids.extend(suffix_ids);
            ids.push(m.middle);
            ids
        }
    })
}

/// The longest tail of `text` that starts at a line start (or is the cursor's own line) and fits
/// `budget` tokens.
fn window_before<'a>(tokenizer: &Tokenizer, text: &'a str, budget: usize) -> Result<&'a str> {
    let mut start = text.len();
    let mut used = 0;
    // Walk whole lines upward from the cursor; the cursor's line is always kept whole.
    let mut lines = text.split_inclusive('\n').rev();
    let mut first = true;
    for line in lines.by_ref() {
        let cost = tokenizer.encode(line, false)?.len();
        if !first && used + cost > budget {
            break;
        }
        first = false;
        used += cost;
        start -= line.len();
    }
    Ok(&text[start..])
}

/// The longest head of `text` that ends at a line end (or is the cursor's own line) and fits.
fn window_after<'a>(tokenizer: &Tokenizer, text: &'a str, budget: usize) -> Result<&'a str> {
    let mut end = 0;
    let mut used = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let cost = tokenizer.encode(line, false)?.len();
        if i > 0 && used + cost > budget {
            break;
        }
        used += cost;
        end += line.len();
    }
    Ok(&text[..end])
}
