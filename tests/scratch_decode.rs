#![allow(clippy::unwrap_used)]
mod common;
use pyfill::engine::{LoadedModel, LogitsFor, argmax};
#[test]
fn decode_only() {
    let model = LoadedModel::load(&common::real_model()).unwrap();
    let tokens = model
        .tokenizer
        .encode(include_str!("../benches/data/textwrap.py"), false)
        .unwrap();
    let mut cache = model.new_cache();
    let l = model
        .prefill(&mut cache, &tokens[..512], LogitsFor::Last)
        .unwrap();
    let mut next = argmax(&l.unwrap()).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..200 {
        next = argmax(&model.decode(&mut cache, next).unwrap()).unwrap();
    }
    eprintln!("decode {:.1} tok/s", 200.0 / t.elapsed().as_secs_f64());
}
