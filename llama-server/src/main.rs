//! Thin entry point of `llama-server`.
fn main() -> anyhow::Result<()> {
    Ok(())
}
