//! The `peregrine` binary: parses the configuration, sets up logging and runs the command.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use peregrine::config::{Command, Config};

/// jemalloc's start-up options, which jemalloc reads from this symbol: the heap profiler on
/// from the start, sampling one allocation per 512 KiB allocated on average
/// (`lg_prof_sample:19`), which keeps the cost of sampling out of the per-request budget.
/// The symbol lives in the binary because the linker may drop it from a library.
#[cfg(feature = "heap-profile")]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "malloc_conf")]
pub static malloc_conf: &[u8] = b"prof:true,prof_active:true,lg_prof_sample:19\0";

/// Time blocking tasks get to finish once the server has stopped.
const EXIT_GRACE: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    let config = Config::parse();
    if let Some(Command::Token(args)) = &config.command {
        return match peregrine::auth::token::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Err(err) = config.validate() {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }
    let (log_writer, _log_writer_guard) = match peregrine::telemetry::start_writer() {
        Ok(writer) => writer,
        Err(err) => {
            eprintln!("error: failed to start the log's writer thread: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(err) = peregrine::telemetry::init(&config, log_writer) {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: failed to start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match config.command {
            Some(Command::Migrate) => peregrine::migrate(&config).await,
            Some(Command::Token(_)) => unreachable!("handled before the runtime starts"),
            None => peregrine::serve(config, peregrine::shutdown::signal()).await,
        }
    });
    // The server has already given in-flight work its SHUTDOWN_TIMEOUT; a blocking task still
    // running (a SQLite write, which is atomic either way) must not hold the exit up.
    runtime.shutdown_timeout(EXIT_GRACE);

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(
                error = format!("{err:#}"),
                "peregrine stopped with an error"
            );
            ExitCode::FAILURE
        }
    }
}
