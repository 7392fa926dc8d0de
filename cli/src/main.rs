//! `rpod`: the engine's entry point; everything lives in the library.

fn main() {
    std::process::exit(rpod::main_exit());
}
