//! `rpod`: the engine. Only `rpod version` exists so far (issue 5 builds the rest).

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("version") => println!("rpod {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!("rpod: only `rpod version` is implemented so far");
            std::process::exit(125);
        }
    }
}
