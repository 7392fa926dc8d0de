fn main() {
    let arg = std::env::args().nth(1);
    if arg.as_deref() == Some("version") {
        println!("{{\"version\": \"{}\"}}", dnsd::VERSION);
        return;
    }
    eprintln!("dnsd {}: not implemented yet", dnsd::VERSION);
    std::process::exit(1);
}
