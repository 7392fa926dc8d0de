use clap::Parser;

fn main() {
    let args = match portfwd::Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            eprint!("{e}");
            eprintln!("Try 'portfwd --help' for more information.");
            std::process::exit(1);
        }
    };
    if args.help {
        print!("{}", portfwd::cli::HELP);
        return;
    }
    if args.version {
        println!("portfwd version {}", portfwd::VERSION);
        println!("smoltcp version 0.14");
        return;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("PORTFWD_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let cfg = match portfwd::Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("portfwd: {e}");
            std::process::exit(1);
        }
    };
    match portfwd::run(cfg) {
        Ok(exit) => {
            eprintln!("portfwd is exiting ({exit:?})");
        }
        Err(e) => {
            eprintln!("portfwd: {e}");
            std::process::exit(1);
        }
    }
}
