//! `quinn-floor` with mimalloc as the global allocator, as the relay is built (huge pages off).
//! The benchmark runs it as the `floor-mimalloc` subject, so the allocator's share of the relay's
//! CPU per frame against the plain floor is measured rather than assumed.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "quinn-floor.rs"]
mod floor;

fn main() -> anyhow::Result<()> {
    floor::main()
}
