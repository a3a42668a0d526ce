use clap::Parser;

fn main() {
    let cli = builder::cli::Cli::parse();
    let level = match cli.verbose {
        0 => "warn,fatfs=error",
        1 => "info,flypack_contracts=debug,builder=debug",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = builder::interrupt::install() {
        eprintln!("warning: cannot handle interrupts: {e:#}");
    }
    let code = match builder::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
