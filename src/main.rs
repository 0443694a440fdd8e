//! The `peregrine` binary: parses the configuration, sets up logging and runs the command.

use std::process::ExitCode;

use clap::Parser;
use peregrine::config::{Command, Config};

fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(err) = config.validate() {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }
    if let Err(err) = peregrine::telemetry::init(&config) {
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
            None => peregrine::serve(config, peregrine::shutdown::signal()).await,
        }
    });

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
