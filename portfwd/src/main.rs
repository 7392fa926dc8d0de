fn main() {
    let arg = std::env::args().nth(1);
    if arg.as_deref() == Some("version") {
        println!("{{\"version\": \"{}\"}}", portfwd::VERSION);
        return;
    }
    eprintln!("portfwd {}: not implemented yet", portfwd::VERSION);
    std::process::exit(1);
}
