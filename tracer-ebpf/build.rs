fn main() {
    // bpf-linker is found on PATH at link time; rebuild when it changes.
    if let Ok(path) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
