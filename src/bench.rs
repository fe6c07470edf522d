//! `pyfill bench`: engine figures on real Python (load time, prefill and decode rates, peak RSS).

use std::path::Path;
use std::time::Instant;

use crate::engine::{self, LoadedModel, LogitsFor};

/// Real Python to time prefill on (CPython's `textwrap.py`, PSF licence).
const SAMPLE: &str = include_str!("../benches/data/textwrap.py");

pub const PREFILL_LENGTHS: [usize; 3] = [128, 512, 1024];
pub const DECODE_TOKENS: u16 = 64;

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Tokens decoded after the 512-token prompt.
    pub decode_tokens: usize,
    /// Only the 512-token prompt and the decoding after it.
    pub decode_only: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub model: String,
    pub threads: usize,
    pub load_s: f64,
    /// (prompt tokens, tokens per second)
    pub prefill: Vec<(usize, f64)>,
    /// Prefill rate on the 512-token prompt.
    pub prefill_tok_s: f64,
    /// Greedy decoding after the 512-token prompt.
    pub decode_tok_s: f64,
    /// Tokens decoded for `decode_tok_s`.
    pub decode_tokens: usize,
    pub peak_rss_mb: f64,
}

pub fn run(path: &Path, options: Options) -> engine::Result<Report> {
    let start = Instant::now();
    let model = LoadedModel::load(path)?;
    let load_s = start.elapsed().as_secs_f64();
    let tokens = model.tokenizer.encode(SAMPLE, false)?;

    // Warm-up: first-touch allocations and page faults are not what we measure.
    let mut cache = model.new_cache();
    model.prefill(&mut cache, &tokens[..16], LogitsFor::Last)?;

    let mut prefill = Vec::new();
    let mut decode_tok_s = 0.0;
    for &n in &PREFILL_LENGTHS {
        if options.decode_only && n != 512 {
            continue;
        }
        let prompt = &tokens[..n.min(tokens.len())];
        let mut cache = model.new_cache();
        let t = Instant::now();
        let logits = model.prefill(&mut cache, prompt, LogitsFor::Last)?;
        prefill.push((
            prompt.len(),
            prompt.len() as f64 / t.elapsed().as_secs_f64(),
        ));
        if n == 512 {
            let mut next = argmax(logits)?;
            let t = Instant::now();
            for _ in 0..options.decode_tokens {
                next = argmax(Some(model.decode(&mut cache, next)?))?;
            }
            decode_tok_s = options.decode_tokens as f64 / t.elapsed().as_secs_f64();
        }
    }
    let prefill_tok_s = prefill
        .iter()
        .find(|(n, _)| *n == 512)
        .map_or(0.0, |(_, r)| *r);
    Ok(Report {
        model: path.display().to_string(),
        threads: engine::threads(),
        load_s,
        prefill,
        prefill_tok_s,
        decode_tok_s,
        decode_tokens: options.decode_tokens,
        peak_rss_mb: peak_rss_bytes().unwrap_or(0) as f64 / (1024.0 * 1024.0),
    })
}

fn argmax(logits: Option<engine::Logits>) -> engine::Result<u32> {
    engine::argmax(&logits.ok_or(engine::Error::EmptyPrompt)?)
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = format!(
            "model      {}\nthreads    {}\nload       {:.2} s\n",
            self.model, self.threads, self.load_s
        );
        for (n, rate) in &self.prefill {
            out += &format!("prefill    {n:>5} tokens   {rate:>8.1} tok/s\n");
        }
        out += &format!(
            "decode     {:>5} tokens   {:>8.1} tok/s  (after a 512-token prompt)\n",
            self.decode_tokens, self.decode_tok_s
        );
        out += &format!("peak RSS   {:.0} MB\n", self.peak_rss_mb);
        out
    }
}

/// The process's peak resident set (Linux: `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
