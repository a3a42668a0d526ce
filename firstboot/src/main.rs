use clap::Parser;

fn main() {
    let cli = firstboot::cli::Cli::parse();
    let level = match cli.verbose {
        0 => "info,fatfs=error",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let code = match firstboot::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("firstboot: error: {e:#}");
            // Distinct from the verdict codes 1 and 2.
            3
        }
    };
    std::process::exit(code);
}
