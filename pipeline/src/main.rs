//! The `autotune` binary: parses settings, sets up logs and signals, runs a command, prints
//! one JSON object on stdout, and exits 0 (success, waiting, skipped, dry run), 1 (failed) or
//! 2 (bad settings).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use autotune::lease::{self, UnlockOutcome};
use autotune::run::Job;
use autotune::settings::{LogFormat, Settings, ValidateArgs};
use autotune::storage;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "autotune",
    version,
    about = "Retrains Gemini on Vertex AI when enough new labelled data arrives in a bucket."
)]
struct Cli {
    /// Log format: auto (text on a terminal, JSON for Cloud Logging otherwise), text or json.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_name = "LOG_FORMAT",
        default_value = "auto",
        global = true
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the job: the three gates, the datasets, tuning and the run record; again, up to
    /// MAX_CYCLES, while new data waits.
    Run {
        #[command(flatten)]
        settings: Settings,
        /// Submit the tuning job, record it and exit; a later run follows it and finalises.
        #[arg(long, env = "DETACH", value_name = "DETACH")]
        detach: bool,
    },
    /// Evaluate the gates and say what `run` would do, writing nothing.
    Plan {
        #[command(flatten)]
        settings: Settings,
        /// Output format: readable tables, or the same data as JSON.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The runs, newest first: samples, tokens, cost, the candidate's and the champion's
    /// scores, blessed, promoted.
    History {
        #[command(flatten)]
        settings: Settings,
        /// Output format: a readable table, or the same data as JSON.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        /// Runs shown at most.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// The champion: the model blessed runs promoted, where its Vertex alias points, and how
    /// to call it.
    Champion {
        #[command(flatten)]
        settings: Settings,
    },
    /// Move the champion back to the previous one (or to run RUN_ID's model), pointer and
    /// Vertex alias.
    Rollback {
        #[command(flatten)]
        settings: Settings,
        /// The run whose model becomes the champion again (one of the earlier champions).
        #[arg(long, value_name = "RUN_ID")]
        to: Option<String>,
    },
    /// Check a Vertex AI tuning JSONL file against Vertex's rules.
    Validate(ValidateArgs),
    /// The model table: where each model is tuned and served, when it was released and
    /// retires, its successor, and the pages that say so.
    Models {
        /// A JSON file of model entries that replaces or adds to the built-in table.
        #[arg(long, env = "MODEL_LIMITS_FILE", value_name = "MODEL_LIMITS_FILE")]
        model_limits_file: Option<std::path::PathBuf>,
        /// Output format: a readable table, or the same data as JSON.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Free the run lock (refuses a live lease without --force).
    Unlock {
        /// Bucket, as for `run`.
        #[arg(long, env = "BUCKET_NAME", value_name = "BUCKET_NAME")]
        bucket_name: String,
        /// Folder of the lock.
        #[arg(
            long,
            env = "MODEL_META_FOLDER",
            value_name = "MODEL_META_FOLDER",
            default_value = "trained_model"
        )]
        model_meta_folder: String,
        /// Free the lock even if its lease is live.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Json,
    Text,
}

/// Resolves when the process is asked to stop. The handlers are installed before any work,
/// so SIGTERM (Cloud Run's warning, ~10 s before SIGKILL) never kills the run outright.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT (Ctrl-C)",
        }
    })
}

fn print(value: &impl serde::Serialize) {
    let mut text = serde_json::to_string_pretty(value).expect("output serialises");
    text.push('\n');
    out(&text);
}

/// Set when stdout could not take the result for another reason than a reader that left.
static STDOUT_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes the result to stdout. A reader that stopped reading (`autotune validate … | head -1`)
/// is not a failure: the rest is dropped quietly and the command keeps its own exit code. Any
/// other write error (a full disk under a redirect) is said on stderr and fails the command.
fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            STDOUT_FAILED.store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::error!("cannot write the result to stdout: {e}");
            #[allow(
                clippy::print_stderr,
                reason = "stdout failed: the error goes to stderr"
            )]
            {
                eprintln!("error: cannot write the result to stdout: {e}");
            }
        }
    }
}

async fn main_async(cli: Cli, progress: bool) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { settings, detach } => {
            let mut shutdown = Box::pin(shutdown_signal()?);
            let job = job(&settings, progress)?;
            // Raced against the signal like everything after it: a bucket that does not answer
            // must not keep the process past Cloud Run's 10 s.
            let first = tokio::select! {
                checked = job.check_against_last_run() => checked.map_err(|e| anyhow::anyhow!(e))?,
                signal = &mut shutdown => {
                    let stop = autotune::run::Stop::Interrupted {
                        signal,
                        stage: autotune::run::Stage::Gates,
                    };
                    let mut outcome = autotune::run::Outcome::new(stop.status(), stop.to_string());
                    outcome.min_samples = settings.min_samples;
                    print(&outcome);
                    return Ok(ExitCode::from(outcome.status.exit_code() as u8));
                }
            };
            let cycles = Box::pin(job.run_cycles_after(first, shutdown, detach)).await;
            print(&cycles);
            Ok(ExitCode::from(cycles.exit_code() as u8))
        }
        Command::Plan { settings, output } => {
            let job = job(&settings, false)?;
            let outcome = job.plan().await;
            match output {
                Output::Json => print(&outcome),
                Output::Text => out(&autotune::summary::render(&outcome)),
            }
            Ok(ExitCode::from(outcome.status.exit_code() as u8))
        }
        Command::History {
            settings,
            output,
            limit,
        } => {
            let job = job(&settings, false)?;
            let rows = autotune::summary::history(&job.history(limit).await?);
            match output {
                Output::Json => print(&rows),
                Output::Text => out(&autotune::summary::render_history(&rows)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Champion { settings } => {
            let job = job(&settings, false)?;
            print(&job.champion().await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback { settings, to } => {
            let job = job(&settings, false)?;
            match job.rollback(to.as_deref()).await {
                Ok(rolled) => {
                    print(&serde_json::json!({
                        "status": "rolled_back",
                        "reason": rolled.champion.reason,
                        "champion": rolled.champion,
                        "alias": rolled.alias,
                    }));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    tracing::error!("rollback refused: {e}");
                    print(&serde_json::json!({ "status": "refused", "reason": e.to_string() }));
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Validate(args) => {
            let config = args.config()?;
            let report = autotune::validate::validate_path(&args.path, &config).await?;
            if args.json() {
                print(&report);
            } else {
                out(&report.to_text());
            }
            Ok(ExitCode::from(
                u8::try_from(report.exit_code()).unwrap_or(1),
            ))
        }
        Command::Models {
            model_limits_file,
            output,
        } => {
            let table = autotune::settings::model_table(model_limits_file.as_deref())?;
            match output {
                Output::Json => print(&serde_json::json!({ "models": table.models() })),
                Output::Text => out(&autotune::summary::render_models(table.models())),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Unlock {
            bucket_name,
            model_meta_folder,
            force,
        } => unlock(&bucket_name, &model_meta_folder, force).await,
    }
}

/// `autotune unlock`.
async fn unlock(
    bucket_name: &str,
    model_meta_folder: &str,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let store = storage::open(bucket_name).context("BUCKET_NAME")?;
    let key = lease::lock_key(model_meta_folder);
    let outcome = lease::unlock(&*store, &key, force).await?;
    let (status, code, reason, detail) = match outcome {
        UnlockOutcome::NotLocked => (
            "not_locked",
            0,
            "no lock held".to_owned(),
            serde_json::Value::Null,
        ),
        UnlockOutcome::Unlocked(r) => (
            "unlocked",
            0,
            "lock released".to_owned(),
            serde_json::to_value(r)?,
        ),
        UnlockOutcome::Refused(r) => (
            "refused",
            1,
            "the lease is live: a run holds it; pass --force to free it anyway".to_owned(),
            serde_json::to_value(r)?,
        ),
        UnlockOutcome::Unreadable { uri, reason } => (
            "unreadable",
            1,
            format!("{uri} is not a lease ({reason}); pass --force to delete it"),
            serde_json::Value::Null,
        ),
    };
    print(
        &serde_json::json!({ "status": status, "reason": reason, "lock": store.uri(&key), "lease": detail }),
    );
    Ok(ExitCode::from(code))
}

/// The job the settings describe; every setting is checked here, before any work.
fn job(settings: &Settings, progress: bool) -> anyhow::Result<Job> {
    let store = storage::open_with(&settings.bucket_name, &settings.http.client_options())
        .context("BUCKET_NAME")?;
    settings.check_store(&*store)?;
    let mut job = Job::new(settings.job_config()?, store, settings.tuner()?);
    job.contestants = settings.contestants()?;
    job.registry = settings.registry()?;
    job.notifier = Arc::new(settings.notifier()?);
    job.progress = progress;
    Ok(job)
}

/// Threads for blocking work (a local folder's listing and reads). Few: each thread that
/// allocates may get a malloc arena of its own, and memory freed in one arena is not reused by
/// another (the second listing of a follow-up cycle then costs its whole size again).
const BLOCKING_THREADS: usize = 4;

/// jemalloc, not the C library's allocator: glibc's keeps memory freed in one thread's arena
/// from the others (a follow-up cycle's second listing cost its whole size again), and the
/// container's static musl one is slow under many threads.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let progress = autotune::logging::init(cli.log_format.into());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            #[allow(clippy::print_stderr, reason = "no logger without a runtime")]
            {
                eprintln!("error: cannot start the async runtime: {e}");
            }
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(main_async(cli, progress));
    // Blocking reads of a folder that stopped answering must not keep the process either.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(_) if STDOUT_FAILED.load(std::sync::atomic::Ordering::SeqCst) => ExitCode::from(1),
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            #[allow(
                clippy::print_stderr,
                reason = "the error as a person reads it, beside the log"
            )]
            {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}
