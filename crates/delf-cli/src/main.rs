//! `delf`: the one binary of delf-rs. It parses the command line, loads the configuration, starts logging and
//! dispatches to the crates that do the work. Errors are reported once, on stderr, with a documented exit code.

mod cli;
mod commands;
mod exit;
mod logging;
mod progress;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use delf_engine::Config;

fn main() -> ExitCode {
    // Before any thread starts: libtorch's tensors reuse heap memory instead of fresh zero-filled pages.
    let allocator = delf_model::allocator::tune_for_tensors();
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::exit(exit::CONFIG);
        }
    };
    let level = if cli.quiet {
        "warn"
    } else {
        match cli.verbose {
            0 => config.log.level.as_str(),
            1 => "debug",
            _ => "trace",
        }
    };
    logging::init(cli.log_format.unwrap_or(config.log.format), level);
    tracing::debug!(?allocator, "C allocator");
    if config.threads > 0 {
        tch::set_num_threads(config.threads as i32);
    }

    match run(&cli, &config) {
        Ok(()) => exit::exit(exit::OK),
        Err(err) => {
            tracing::debug!(error = ?err, "command failed");
            eprintln!("error: {err:#}");
            exit::exit(exit::code_for(&err))
        }
    }
}

fn run(cli: &Cli, config: &Config) -> anyhow::Result<()> {
    match &cli.command {
        Command::Doctor(args) => commands::doctor::run(args, config),
        Command::Config(args) if args.check => {
            let line = std::iter::once("delf".to_string()).chain(args.command.iter().cloned());
            match Cli::try_parse_from(line) {
                Ok(_) => {
                    println!("ok: delf {}", args.command.join(" "));
                    Ok(())
                }
                Err(e) => {
                    let message = e.to_string();
                    Err(exit::Usage(message.trim().trim_start_matches("error: ").to_string()).into())
                }
            }
        }
        Command::Config(_) => {
            print!("{}", config.to_toml());
            Ok(())
        }
        Command::Health(args) => commands::query::health(args, config),
        Command::Extract(args) => match &args.list {
            Some(list) => commands::batch_extract::run(list, args, config),
            None => commands::extract::run(args, config),
        },
        Command::Features(command) => commands::features::run(command),
        Command::Pca(command) => commands::pca::run(command, config),
        Command::Match(args) => commands::matching::run(args, config),
        Command::Index(command) => commands::index(command, config),
        Command::Search(args) => commands::search::run(args, config),
        Command::Serve(args) => commands::serve::run(args, config),
        Command::Query(args) => commands::query::run(args, config),
        Command::Cluster(command) => commands::cluster_admin::run(command, config),
        Command::Train(command) => commands::train::run(command, config),
        Command::Bench(command) => delf_bench::run(command, config, &mut progress::StageBars::default()),
        Command::Eval(command) => commands::eval::run(command, config),
    }
}
