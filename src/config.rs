//! The user's settings: one serde struct with defaults, filled from the command line, the
//! client's `initializationOptions` and `workspace/didChangeConfiguration`. An update is merged
//! over the current values and validated as a whole; an invalid one changes nothing.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Settings {
    /// Serve suggestions at all.
    pub enable: bool,
    /// GGUF model file; `None` means the fetched default model.
    pub model: Option<PathBuf>,
    /// Most tokens per suggestion.
    pub max_tokens: usize,
    /// Tokens of text before the cursor the prompt may hold.
    pub prefix_tokens: usize,
    /// Tokens of text after the cursor the prompt may hold.
    pub suffix_tokens: usize,
    /// Tokens of signatures from other files (imports, other open buffers) the prompt may hold.
    pub related_tokens: usize,
    /// Prompt layout: `auto` (from the model's tokens) or a family name (`qwen2.5-coder`,
    /// `starcoder2`, `starcoder`, `deepseek-coder`, `codellama`, `prefix-only`).
    pub prompt_format: String,
    /// How a whole function body is asked for: `auto` (a chat prompt for chat-tuned models,
    /// else fill-in-the-middle), `fim` or `chat`.
    pub block_prompt: String,
    /// Wall-clock limit per suggestion, in milliseconds (0: none).
    pub timeout_ms: u64,
    /// Log filter (`tracing` directives, e.g. `info`); `None` keeps `PYFILL_LOG` / `RUST_LOG`.
    pub log_level: Option<String>,
    /// CPU threads for inference; `None` means physical cores (or `--threads`). Read once,
    /// before the model first loads.
    pub threads: Option<usize>,
    /// Where suggestions are generated: `local` (the in-process engine), or an inference
    /// server: `llama-cpp`, `openai`, `tgi` (see [`crate::remote`]).
    pub backend: crate::remote::Backend,
    /// The server's base URL (remote backends).
    pub endpoint: Option<String>,
    /// The model name sent to OpenAI-compatible servers.
    pub remote_model: Option<String>,
    /// Environment variable holding the server's API key (sent as a bearer token).
    pub api_key_env: Option<String>,
    /// Tokenizer for a remote backend's prompt budgets: a GGUF or a `tokenizer.json`; `None`
    /// counts bytes (an estimate, said in the log).
    pub tokenizer: Option<PathBuf>,
    /// Longest a remote request may take, in milliseconds (connection and generation).
    pub remote_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        let budget = crate::context::Budget::default();
        Self {
            enable: true,
            model: None,
            max_tokens: 64,
            prefix_tokens: budget.prefix_tokens,
            suffix_tokens: budget.suffix_tokens,
            related_tokens: budget.related_tokens,
            prompt_format: "auto".into(),
            block_prompt: "auto".into(),
            timeout_ms: 10_000,
            log_level: None,
            threads: None,
            backend: crate::remote::Backend::Local,
            endpoint: None,
            remote_model: None,
            api_key_env: None,
            tokenizer: None,
            remote_timeout_ms: 10_000,
        }
    }
}

impl Settings {
    /// Whether a change from `self` to `new` needs the engine started again.
    pub fn engine_changed(&self, new: &Settings) -> bool {
        let remote = |s: &Settings| {
            (s.backend != crate::remote::Backend::Local).then(|| {
                (
                    s.endpoint.clone(),
                    s.remote_model.clone(),
                    s.api_key_env.clone(),
                    s.tokenizer.clone(),
                    s.remote_timeout_ms,
                )
            })
        };
        // The local model file matters to the local backend only.
        let local =
            |s: &Settings| (s.backend == crate::remote::Backend::Local).then(|| s.model.clone());
        (self.enable, self.backend, local(self), remote(self))
            != (new.enable, new.backend, local(new), remote(new))
    }

    /// The remote backend's options, when one is chosen.
    pub fn remote(&self) -> Option<crate::remote::Options> {
        if self.backend == crate::remote::Backend::Local {
            return None;
        }
        Some(crate::remote::Options {
            backend: self.backend,
            endpoint: self.endpoint.clone().unwrap_or_default(),
            model: self.remote_model.clone(),
            api_key_env: self.api_key_env.clone(),
            timeout: std::time::Duration::from_millis(self.remote_timeout_ms),
            retries: 2,
        })
    }

    /// `update` over `self`: keys present in `update` replace current values. Accepts the
    /// settings object itself or one wrapped as `{"pyfill": {...}}` (what editors send for a
    /// configuration section). `null` changes nothing.
    pub fn merged(&self, update: &Value) -> Result<Settings, String> {
        let update = match update {
            Value::Null => return Ok(self.clone()),
            // An empty Lua table is encoded as `[]` (Neovim's client sends that for no settings).
            Value::Array(a) if a.is_empty() => return Ok(self.clone()),
            Value::Object(map) if map.len() == 1 && map.contains_key("pyfill") => &map["pyfill"],
            other => other,
        };
        let Value::Object(changes) = update else {
            return Err(format!("settings must be an object, got {update}"));
        };
        let mut current = serde_json::to_value(self).map_err(|e| e.to_string())?;
        if let Value::Object(map) = &mut current {
            for (k, v) in changes {
                map.insert(k.clone(), v.clone());
            }
        }
        let settings: Settings =
            serde_json::from_value(current).map_err(|e| format!("invalid settings: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, value: usize, min: usize, max: usize| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "{name} must be between {min} and {max}, got {value}"
                ))
            }
        };
        check("maxTokens", self.max_tokens, 1, 65_536)?;
        check("prefixTokens", self.prefix_tokens, 16, 32_768)?;
        check("suffixTokens", self.suffix_tokens, 0, 32_768)?;
        check("relatedTokens", self.related_tokens, 0, 32_768)?;
        if !crate::prompt::BLOCK_PROMPTS.contains(&self.block_prompt.as_str()) {
            return Err(format!(
                "blockPrompt must be one of {}, got '{}'",
                crate::prompt::BLOCK_PROMPTS.join(", "),
                self.block_prompt
            ));
        }
        if self.prompt_format != "auto"
            && !crate::prompt::NAMES.contains(&self.prompt_format.as_str())
        {
            return Err(format!(
                "promptFormat must be auto or one of {}, got '{}'",
                crate::prompt::NAMES.join(", "),
                self.prompt_format
            ));
        }
        if let Some(n) = self.threads {
            check("threads", n, 1, 256)?;
        }
        if self.backend != crate::remote::Backend::Local && self.endpoint.is_none() {
            return Err(format!(
                "backend {} needs an endpoint (the server's URL)",
                self.backend.name()
            ));
        }
        check(
            "remoteTimeoutMs",
            self.remote_timeout_ms as usize,
            100,
            600_000,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn updates_merge_over_current_values() {
        let s = Settings::default()
            .merged(&json!({"maxTokens": 12, "model": "/m.gguf"}))
            .unwrap();
        assert_eq!(s.max_tokens, 12);
        assert_eq!(s.model, Some(PathBuf::from("/m.gguf")));
        assert_eq!(s.prefix_tokens, 1024);
        let s = s.merged(&json!({"pyfill": {"enable": false}})).unwrap();
        assert!(!s.enable);
        assert_eq!(s.max_tokens, 12);
        assert_eq!(s.merged(&Value::Null).unwrap(), s);
        assert_eq!(s.merged(&json!([])).unwrap(), s);
    }

    #[test]
    fn invalid_updates_are_refused_whole() {
        let s = Settings::default();
        for bad in [
            json!({"maxTokens": 0}),
            json!({"maxTokens": "many"}),
            json!({"prefixTokens": 1}),
            json!({"modle": "/typo.gguf"}),
            json!({"promptFormat": "gpt5"}),
            json!({"blockPrompt": "poem"}),
            json!([1, 2]),
        ] {
            assert!(s.merged(&bad).is_err(), "{bad}");
        }
    }
}
