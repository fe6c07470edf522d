//! One suggestion, start to end: the context around the cursor (`context`), the prompt for the
//! model's family (`prompt`), generation on the engine thread with the mode's stop rule, and the
//! tidy-up (`postprocess`). Also the one place that reads other workspace files from disk for
//! the context ([`FsWorkspace`]).

mod recent;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use tree_sitter::Tree;

use crate::context::{self, Budget, Context, Mode, Source, Workspace};
use crate::engine::{self, Engine, GenerationParams, Request};
use crate::postprocess;
use crate::prompt::{self, Family};

pub use recent::{Place, Recent};

/// Files larger than this are not read for related code.
const MAX_RELATED_FILE_BYTES: u64 = 512 * 1024;

/// Other files of a workspace: open buffers as the editor has them, else the disk under `root`.
#[derive(Debug, Clone, Default)]
pub struct FsWorkspace {
    pub root: Option<PathBuf>,
    /// Open buffers other than the current one: workspace-relative path and text.
    pub open: Vec<(String, String)>,
}

impl FsWorkspace {
    fn disk_path(&self, relative: &str) -> Option<PathBuf> {
        let root = self.root.as_ref()?;
        let relative = Path::new(relative);
        // Only paths below the root.
        if !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return None;
        }
        Some(root.join(relative))
    }
}

impl Workspace for FsWorkspace {
    fn file(&self, path: &str) -> Option<String> {
        if let Some((_, text)) = self.open.iter().find(|(p, _)| p == path) {
            return Some(text.clone());
        }
        let disk = self.disk_path(path)?;
        let meta = std::fs::metadata(&disk).ok()?;
        if !meta.is_file() || meta.len() > MAX_RELATED_FILE_BYTES {
            return None;
        }
        std::fs::read_to_string(disk).ok()
    }

    fn exists(&self, path: &str) -> bool {
        self.open.iter().any(|(p, _)| p == path)
            || self
                .disk_path(path)
                .is_some_and(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
    }

    fn open_files(&self) -> Vec<(String, String)> {
        self.open.clone()
    }
}

/// `path` relative to `root`, with `/` separators, if it lies below it.
pub fn relative_path(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let parts: Vec<&str> = relative
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()?;
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The window of the fallback prompt that answers while the engine computes the whole one, no
/// related files; the most of it, for an engine that computes it in about [`COLD_PREFILL`]
/// (see [`cold_budget`]). On the HumanEval line sample answers from it score 0.725 pass@1, as
/// the whole window does; from 256 before the cursor too, now that a docstring the window
/// skips keeps its first lines (0.700 with the enclosing headers alone, 0.692 without them).
pub const COLD_BUDGET: Budget = Budget {
    prefix_tokens: 384,
    suffix_tokens: 32,
    related_tokens: 0,
    lost_docstring: true,
};

/// Prefill time the small window is sized for.
pub const COLD_PREFILL: std::time::Duration = std::time::Duration::from_millis(2000);

/// The least the small window keeps before the cursor, however slow the engine.
pub const COLD_MIN_PREFIX: usize = 256;

/// The small window for an engine that computes prompts at `prefill_rate` tokens/s: as much
/// before the cursor as fits in [`COLD_PREFILL`] with the suffix and markers, between
/// [`COLD_MIN_PREFIX`] and [`COLD_BUDGET`]'s (which it is when the rate is unknown). On a slow
/// or busy machine the first suggestion then still comes within [`COLD_TIME`], from less
/// context.
pub fn cold_budget(prefill_rate: Option<f64>) -> Budget {
    let prefix_tokens = prefill_rate.map_or(COLD_BUDGET.prefix_tokens, |rate| {
        let fits = (rate * COLD_PREFILL.as_secs_f64()) as usize;
        // In steps of 32, so a rate measured a little differently gives the same window.
        (fits.saturating_sub(COLD_BUDGET.suffix_tokens + 48) / 32 * 32)
            .clamp(COLD_MIN_PREFIX, COLD_BUDGET.prefix_tokens)
    });
    Budget {
        prefix_tokens,
        ..COLD_BUDGET
    }
}

/// The most a fallback answer may take, prefill included: the first suggestion on a freshly
/// opened file comes within about 3 s on two cores, shortened if need be (a long statement is
/// cut to its complete lines).
pub const COLD_TIME: std::time::Duration = std::time::Duration::from_millis(2600);

/// Everything a suggestion request needs, owned so it can move to a worker thread.
#[derive(Clone)]
pub struct Ask {
    pub text: String,
    /// The document's tree for `text` (parsed here when `None`).
    pub tree: Option<Tree>,
    /// Byte offset of the cursor.
    pub offset: usize,
    /// The file's path relative to the workspace root.
    pub path: Option<String>,
    pub workspace: FsWorkspace,
    pub budget: Budget,
    pub params: GenerationParams,
    /// A family name of [`prompt::NAMES`], or `auto`.
    pub prompt_format: String,
    /// One of [`prompt::BLOCK_PROMPTS`].
    pub block_prompt: String,
    pub layout: prompt::Layout,
    /// Give the engine a small-window fallback prompt ([`COLD_BUDGET`]) to answer with while it
    /// has little of the whole prompt cached (the editor's case; one-shot uses want the whole).
    pub cold_window: bool,
    /// A small window of this many tokens before the cursor, its answers with no time limit
    /// (`pyfill eval --cold-prefix-tokens`: a window's quality on any machine). `None`: sized to
    /// the engine ([`cold_budget`]) and cut at [`COLD_TIME`], the editor's case.
    pub cold_prefix_tokens: Option<usize>,
}

impl Ask {
    /// A request for `text` at `offset` with default settings and no workspace.
    pub fn new(text: String, offset: usize, params: GenerationParams) -> Ask {
        Ask {
            text,
            tree: None,
            offset,
            path: None,
            workspace: FsWorkspace::default(),
            budget: Budget::default(),
            params,
            prompt_format: "auto".into(),
            block_prompt: "auto".into(),
            layout: prompt::Layout::default(),
            cold_window: false,
            cold_prefix_tokens: None,
        }
    }
}

/// What the engine is asked, and the context to tidy its answer with.
pub struct Plan {
    pub request: Request,
    pub context: Context,
}

/// `model_name` is the GGUF's `general.name` (it tells chat-tuned models); `prefill_rate` (the
/// engine's, tokens/s) sizes the small window ([`cold_budget`]).
pub fn plan(
    tokenizer: &engine::Tokenizer,
    model: &engine::ModelInfo,
    ask: &Ask,
    prefill_rate: Option<f64>,
) -> engine::Result<Plan> {
    let model_name = model.name.as_deref();
    let parsed;
    let tree = match &ask.tree {
        Some(tree) => tree,
        None => {
            parsed = crate::documents::parse(&ask.text);
            &parsed
        }
    };
    let family = Family::named(tokenizer, &ask.prompt_format).unwrap_or_else(|| {
        tracing::warn!(
            "prompt format '{}' needs tokens this model does not have; detecting it instead",
            ask.prompt_format
        );
        Family::detect(tokenizer)
    });
    let count = |s: &str| {
        tokenizer
            .encode(s, false)
            .map_or(s.len() / 3, |ids| ids.len())
    };
    let source = Source {
        text: &ask.text,
        tree,
        offset: ask.offset,
        path: ask.path.as_deref(),
    };
    let budget = fit_to_context(&ask.budget, model.context_length, ask.params.max_tokens);
    let context = context::build(&source, &budget, &count, &ask.workspace);
    let repository = ask
        .workspace
        .root
        .as_ref()
        .and_then(|r| r.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or(prompt::DEFAULT_REPOSITORY);
    // A server cannot heal (see `ModelInfo::remote`): its prompts end with the line typed so
    // far before the suffix, and whole bodies are asked for by FIM (a chat prompt ends in the
    // typed indentation, which needs healing).
    let layout = if model.remote {
        prompt::Layout::Classic
    } else {
        ask.layout
    };
    let chat = match ask.block_prompt.as_str() {
        _ if model.remote => false,
        "chat" => true,
        "auto" => prompt::chat_tuned(model_name),
        _ => false,
    };
    let chat_prompt = chat && context.empty_body;
    let prompt_for = |context: &Context| -> engine::Result<Vec<u32>> {
        let chat = if chat_prompt {
            prompt::chat_block(tokenizer, context)?
        } else {
            None
        };
        match chat {
            Some(p) => Ok(p),
            None => prompt::build(tokenizer, &family, context, repository, layout),
        }
    };
    let prompt = prompt_for(&context)?;
    // When the engine has little of this prompt cached (a freshly opened file), a small
    // window answers first while the whole one is computed in the background.
    let fallback = if ask.cold_window && !model.remote && prompt.len() > engine::FOREGROUND_LIMIT {
        let small = match ask.cold_prefix_tokens {
            Some(prefix_tokens) => Budget {
                prefix_tokens,
                ..COLD_BUDGET
            },
            None => cold_budget(prefill_rate),
        };
        let small = fit_to_context(&small, model.context_length, ask.params.max_tokens);
        let small = context::build(&source, &small, &count, &ask.workspace);
        Some(prompt_for(&small)?).filter(|p| p.len() < prompt.len())
    } else {
        None
    };
    Ok(Plan {
        request: Request {
            prompt,
            fallback,
            fallback_max_time: ask.cold_prefix_tokens.is_none().then_some(COLD_TIME),
            params: ask.params.clone(),
            stop: Some(postprocess::stop_rule(&context)),
            // The typing layout ends the prompt with the line so far. Chat prompts (for empty
            // bodies) end in the indentation typed: one whitespace token the model never saw
            // before a word (code has "   " + " if"), so it would write " if" and indent every
            // line one space too far; it spells the indentation out again instead.
            heal: (layout == prompt::Layout::Typing
                && !context.line_before.trim_start().is_empty())
                || (chat_prompt && !context.line_before.is_empty()),
        },
        context,
    })
}

/// A suggestion for the editor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    pub text: String,
    pub mode: Mode,
}

/// Async: one suggestion, or `None` when cancelled (by a newer request or the client). Context
/// and prompt building run on a blocking worker and generation on the engine thread, never on
/// the caller's async runtime. `so_far` sees the raw text as it is generated.
pub async fn suggest(
    engine: Arc<Engine>,
    ask: Ask,
    cancel: engine::CancelToken,
    mut so_far: impl FnMut(&str) + Send,
) -> engine::Result<Option<Suggestion>> {
    let rate = engine.prefill_rate();
    // Typing outruns the model: a request superseded while it waited for a blocking worker
    // skips its planning (tokenizing the whole window) instead of adding to the backlog.
    let skip = cancel.clone();
    let Some(plan) =
        plan_blocking(&engine, rate, move || (!skip.is_cancelled()).then_some(ask)).await?
    else {
        return Ok(None);
    };
    if cancel.is_cancelled() {
        return Ok(None);
    }
    let mut generation = engine.generate_with(plan.request, cancel)?;
    let finished = generation.finish_with(&mut so_far).await?;
    tracing::debug!(
        "{:?}: {} prompt tokens{} ({} cached) in {} ms, {} tokens ({} drafted) in {} ms",
        finished.reason,
        finished.prompt_tokens,
        if finished.fallback {
            " of the small window"
        } else {
            ""
        },
        finished.reused_tokens,
        finished.prefill_time.as_millis(),
        finished.tokens.len(),
        finished.drafted_tokens,
        finished.decode_time.as_millis(),
    );
    if finished.reason == engine::FinishReason::Cancelled {
        return Ok(None);
    }
    let context = plan.context;
    let text = tokio::task::spawn_blocking(move || {
        let text = postprocess::tidy(&finished.text, &context);
        (text, context.mode)
    })
    .await
    .map_err(|e| engine::Error::Panicked(e.to_string()))?;
    Ok(Some(Suggestion {
        text: text.0,
        mode: text.1,
    }))
}

/// Tokens a prompt's template (markers, file headers, a chat preamble) may add to its context.
const TEMPLATE_TOKENS: usize = 64;

/// `budget`, shrunk in proportion where the model's context could not hold it together with the
/// template and room to generate (`max_tokens`, at most a quarter of the context).
fn fit_to_context(budget: &Budget, context_length: usize, max_tokens: usize) -> Budget {
    let room = context_length
        .saturating_sub(max_tokens.min(context_length / 4))
        .saturating_sub(TEMPLATE_TOKENS);
    let total = budget.prefix_tokens + budget.suffix_tokens + budget.related_tokens;
    if total <= room {
        return *budget;
    }
    let scale = |n: usize| n * room / total.max(1);
    Budget {
        prefix_tokens: scale(budget.prefix_tokens),
        suffix_tokens: scale(budget.suffix_tokens),
        related_tokens: scale(budget.related_tokens),
        ..*budget
    }
}

/// Async: [`plan`] for the ask `make` gives (`None`: nothing to plan) on a blocking worker,
/// never on the caller's async runtime.
async fn plan_blocking(
    engine: &Engine,
    prefill_rate: Option<f64>,
    make: impl FnOnce() -> Option<Ask> + Send + 'static,
) -> engine::Result<Option<Plan>> {
    let tokenizer = engine.tokenizer().clone();
    let model = engine.info().clone();
    tokio::task::spawn_blocking(move || {
        make()
            .map(|ask| plan(&tokenizer, &model, &ask, prefill_rate))
            .transpose()
    })
    .await
    .map_err(|e| engine::Error::Panicked(e.to_string()))?
}

/// Async: computes the prompt `ask` would send into a spare cache, at low priority
/// ([`Engine::warm`]), for a request expected soon.
pub async fn warm(engine: Arc<Engine>, ask: Ask) -> engine::Result<()> {
    // A server keeps its own cache: nothing to plan for it.
    if engine.info().remote {
        return Ok(());
    }
    match plan_blocking(&engine, None, move || Some(ask)).await? {
        Some(plan) => engine.warm(plan.request.prompt),
        None => Ok(()),
    }
}

/// Async: [`warm`] for what the user is expected to ask next after accepting `suggestion`, which
/// was made for `ask` (see [`after_accepting`]).
pub async fn warm_after(engine: Arc<Engine>, ask: Ask, suggestion: String) -> engine::Result<()> {
    if engine.info().remote {
        return Ok(());
    }
    match plan_blocking(&engine, None, move || accepted(ask, &suggestion)).await? {
        Some(plan) => engine.warm(plan.request.prompt),
        None => Ok(()),
    }
}

/// `ask` moved to where [`after_accepting`] expects the user next, its tree reparsed from the
/// old one, told what changed.
fn accepted(mut ask: Ask, suggestion: &str) -> Option<Ask> {
    let (text, offset) = after_accepting(&ask.text, ask.offset, suggestion)?;
    ask.tree = ask.tree.take().and_then(|mut tree| {
        let point = |text: &str, at: usize| {
            let line = context::line_start_of(text, at);
            tree_sitter::Point::new(text[..line].matches('\n').count(), at - line)
        };
        // The texts agree after the edit: old[old_end..] is new[offset..].
        let old_end = ask.text.len().checked_sub(text.len() - offset)?;
        tree.edit(&tree_sitter::InputEdit {
            start_byte: ask.offset,
            old_end_byte: old_end,
            new_end_byte: offset,
            start_position: point(&ask.text, ask.offset),
            old_end_position: point(&ask.text, old_end),
            new_end_position: point(&text, offset),
        });
        crate::documents::python_parser().parse(&text, Some(&tree))
    });
    ask.text = text;
    ask.offset = offset;
    Some(ask)
}

/// The text and cursor the user is expected to have next after accepting `suggestion` at
/// `offset`: the line finished and a new one begun below it, indented like it (one level
/// deeper after a `:`). Only the text from `offset` to the end of its line (`\r` aside)
/// changed.
pub fn after_accepting(text: &str, offset: usize, suggestion: &str) -> Option<(String, usize)> {
    let line_start = context::line_start_of(text, offset);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let rest = text.get(offset..line_end)?;
    let crlf = rest.ends_with('\r');
    let line = format!(
        "{}{suggestion}{}",
        text.get(line_start..offset)?,
        rest.trim_end_matches('\r')
    );
    let last = line.rsplit('\n').next().unwrap_or_default();
    let mut indent = last[..last.len() - last.trim_start().len()].to_owned();
    if last.trim_end().ends_with(':') {
        indent.push_str(if indent.contains('\t') { "\t" } else { "    " });
    }
    let newline = if crlf { "\r\n" } else { "\n" };
    let before = format!("{}{line}{newline}{indent}", &text[..line_start]);
    let cursor = before.len();
    let after = &text[line_end - usize::from(crlf)..];
    Some((before + after, cursor))
}

/// Blocking: one suggestion from `engine` (for the command line and the eval; the language
/// server drives the same steps asynchronously).
pub fn complete(engine: &Engine, ask: &Ask) -> engine::Result<Suggestion> {
    let plan = plan(
        engine.tokenizer(),
        engine.info(),
        ask,
        engine.prefill_rate(),
    )?;
    let finished = engine.generate(plan.request)?.wait()?;
    Ok(Suggestion {
        text: postprocess::tidy(&finished.text, &plan.context),
        mode: plan.context.mode,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::recent::tests::at;
    use super::*;

    #[test]
    fn budgets_shrink_to_fit_the_models_context() {
        let budget = Budget {
            prefix_tokens: 1024,
            suffix_tokens: 256,
            related_tokens: 384,
            lost_docstring: false,
        };
        assert_eq!(fit_to_context(&budget, 32_768, 64), budget);
        // 512 tokens of context, 64 to generate, 64 for the template: 384 for the parts.
        let small = fit_to_context(&budget, 512, 64);
        assert_eq!(
            small,
            Budget {
                prefix_tokens: 236,
                suffix_tokens: 59,
                related_tokens: 88,
                lost_docstring: false,
            }
        );
        assert!(small.prefix_tokens + small.suffix_tokens + small.related_tokens <= 384);
        // A huge maxTokens keeps at most a quarter of the context for generating.
        let huge = fit_to_context(&budget, 512, 65_536);
        assert_eq!(
            huge.prefix_tokens + huge.suffix_tokens + huge.related_tokens,
            318
        );
    }

    #[test]
    fn the_small_window_fits_the_engine_speed() {
        assert_eq!(cold_budget(None), COLD_BUDGET);
        assert_eq!(cold_budget(Some(400.0)), COLD_BUDGET);
        assert_eq!(cold_budget(Some(200.0)).prefix_tokens, 320);
        assert_eq!(cold_budget(Some(50.0)).prefix_tokens, COLD_MIN_PREFIX);
        assert_eq!(
            cold_budget(Some(50.0)).suffix_tokens,
            COLD_BUDGET.suffix_tokens
        );
    }

    #[test]
    fn accepting_a_line_begins_the_next_one_at_its_indentation() {
        for (before, suggestion, after) in [
            (
                "def f(xs):\n    total = $0\n    return total\n",
                "sum(xs)",
                "def f(xs):\n    total = sum(xs)\n    $0\n    return total\n",
            ),
            (
                "def f(xs):\n    for x in $0\n",
                "xs:",
                "def f(xs):\n    for x in xs:\n        $0\n",
            ),
            ("print($0)", "1", "print(1)\n$0"),
            (
                "if a:\n\tb = $0\r\nc\n",
                "1",
                "if a:\n\tb = 1\r\n\t$0\r\nc\n",
            ),
        ] {
            let (text, offset) = at(before);
            let (expected, cursor) = at(after);
            assert_eq!(
                after_accepting(&text, offset, suggestion),
                Some((expected, cursor)),
                "{before}"
            );
        }
    }
}
