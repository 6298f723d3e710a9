use std::process::ExitCode;

// The protocol allocates and frees buffers of tens of MB per garbling chunk (tables, OT
// matrices, messages). glibc serves each with a fresh mmap; faulting and zeroing those pages
// took about 20% of the servers' CPU. mimalloc reuses freed memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ppdenoise::job::freed_memory::keep_within_jobs();
    ppdenoise::cli::main()
}
