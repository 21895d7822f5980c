//! Where a profile's CPU went, in figures: reads folded stacks (the format of
//! `inferno-collapse-perf`, one `thread;frame;…;leaf count` line per distinct stack) and prints
//! each thread's share of the samples, the share of the parts of copanel's work that
//! BENCHMARKS.md discusses (the writer's sled tree, its log writes and `fdatasync`, the
//! connections' socket writes, context switches, …) and the functions with the most samples of
//! their own. `scripts/flamegraph.sh` runs it next to the flame graph it draws from the same
//! file.
//!
//! ```text
//! perf script -i perf.data | inferno-collapse-perf > out.folded
//! target/release/examples/stacks out.folded
//! ```
//!
//! A part's share is inclusive: the samples whose stack passes through it, out of all samples
//! of the profile. Parts overlap (a `sendto` under a connection worker counts for both), so
//! they do not add up to 100 %.

use std::collections::HashMap;
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (path, top) = match argv.as_slice() {
        [path] => (path, 15),
        [path, flag, n] if flag == "--top" => match n.parse() {
            Ok(n) => (path, n),
            Err(_) => {
                eprintln!("stacks: --top takes a count, not {n:?}");
                return ExitCode::FAILURE;
            }
        },
        _ => {
            eprintln!("usage: stacks FOLDED [--top N]");
            return ExitCode::FAILURE;
        }
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("stacks: cannot read {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match Profile::parse(&text) {
        Ok(p) if p.total > 0 => {
            print!("{}", p.report(top));
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("stacks: {path} holds no samples");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("stacks: {path}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A part of the work: the samples of threads named `thread…` (any thread if `None`) whose
/// stack has a frame containing one of `frames` (any stack if empty); a pattern that begins
/// with `^` matches the start of a frame's name instead, one that begins with `=` the whole
/// name.
struct Part {
    label: &'static str,
    thread: Option<&'static str>,
    frames: &'static [&'static str],
}

const fn part(
    label: &'static str,
    thread: Option<&'static str>,
    frames: &'static [&'static str],
) -> Part {
    Part {
        label,
        thread,
        frames,
    }
}

/// The parts BENCHMARKS.md names. Kernel symbols are those of Linux 6.x (`__x64_sys_*`).
const PARTS: &[Part] = &[
    part(
        "writer thread (copanel-writer)",
        Some("copanel-writer"),
        &[],
    ),
    part(
        "  sled: the batch into its tree (apply_batch)",
        Some("copanel-writer"),
        &["sled::tree::Tree::apply_batch"],
    ),
    part(
        "  the log's write and sync (flush)",
        Some("copanel-writer"),
        &["flush_blocking", "iobuf::make_stable"],
    ),
    part(
        "    of which the kernel's fdatasync",
        Some("copanel-writer"),
        &["sys_fdatasync"],
    ),
    part(
        "  deciding commands",
        Some("copanel-writer"),
        &["copanel::writer::Writer::command"],
    ),
    part(
        "  publishing events and acks",
        Some("copanel-writer"),
        &["copanel::hub::Hub::publish", "copanel::writer::Writer::ack"],
    ),
    part(
        "connection workers (tokio-rt-worker)",
        Some("tokio-rt-worker"),
        &[],
    ),
    part(
        "  socket writes (sendto)",
        Some("tokio-rt-worker"),
        &["sys_sendto"],
    ),
    part(
        "  socket reads (recvfrom)",
        Some("tokio-rt-worker"),
        &["=__x64_sys_recvfrom"],
    ),
    part(
        "  command frames (decode, checks, hand-off)",
        Some("tokio-rt-worker"),
        &["Conn::on_frame"],
    ),
    part(
        "  waiting for events (epoll_wait)",
        Some("tokio-rt-worker"),
        &["sys_epoll_wait"],
    ),
    part("sled's own threads (sled-io-*)", Some("sled-io"), &[]),
    part("sled's flusher (log_flusher)", Some("log_flusher"), &[]),
    part(
        "context switches (__schedule), every thread",
        None,
        &["__schedule"],
    ),
    part(
        "memory allocator (mimalloc), every thread",
        None,
        &["^mi_", "^_mi_"],
    ),
    part("page faults, every thread", None, &["asm_exc_page_fault"]),
];

fn matches(frame: &str, pattern: &str) -> bool {
    if let Some(start) = pattern.strip_prefix('^') {
        frame.starts_with(start)
    } else if let Some(whole) = pattern.strip_prefix('=') {
        frame == whole
    } else {
        frame.contains(pattern)
    }
}

/// Folded stacks: one entry per distinct stack, root (the thread's name) first.
struct Profile {
    stacks: Vec<(Vec<String>, u64)>,
    total: u64,
}

impl Profile {
    fn parse(text: &str) -> Result<Self, String> {
        let mut stacks = Vec::new();
        let mut total = 0u64;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            // The count is the last space-separated field; frames themselves may hold spaces.
            let (stack, count) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("line {}: no sample count", n + 1))?;
            let count: u64 = count
                .parse()
                .map_err(|_| format!("line {}: {count:?} is not a sample count", n + 1))?;
            let frames: Vec<String> = stack.split(';').map(str::to_owned).collect();
            total += count;
            stacks.push((frames, count));
        }
        Ok(Profile { stacks, total })
    }

    fn share(&self, n: u64) -> f64 {
        100.0 * n as f64 / self.total as f64
    }

    /// Samples per thread name (the root frame; sled's numbered IO threads summed).
    fn threads(&self) -> Vec<(String, u64)> {
        let mut by: HashMap<String, u64> = HashMap::new();
        for (frames, count) in &self.stacks {
            let root = frames.first().map(String::as_str).unwrap_or("?");
            let name = if root.starts_with("sled-io") {
                "sled-io-* (all)"
            } else {
                root
            };
            *by.entry(name.to_owned()).or_default() += count;
        }
        let mut v: Vec<_> = by.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// Samples of a part (see [`Part`]).
    fn part(&self, p: &Part) -> u64 {
        self.stacks
            .iter()
            .filter(|(frames, _)| {
                let root = frames.first().map(String::as_str).unwrap_or("");
                p.thread.is_none_or(|t| root.starts_with(t))
                    && (p.frames.is_empty()
                        || frames
                            .iter()
                            .skip(1)
                            .any(|f| p.frames.iter().any(|pat| matches(f, pat))))
            })
            .map(|(_, count)| count)
            .sum()
    }

    /// The `n` functions with the most samples of their own (leaf frames).
    fn leaves(&self, n: usize) -> Vec<(String, u64)> {
        let mut by: HashMap<&str, u64> = HashMap::new();
        for (frames, count) in &self.stacks {
            if let Some(leaf) = frames.last() {
                *by.entry(leaf.as_str()).or_default() += count;
            }
        }
        let mut v: Vec<_> = by.into_iter().map(|(k, c)| (k.to_owned(), c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    fn report(&self, top: usize) -> String {
        // The counts are perf's sample periods: for `cpu-clock`, nanoseconds of CPU.
        let mut out = format!(
            "weight={} (perf's sample periods; cpu-clock: ns of CPU)\n\nthread share:\n",
            self.total
        );
        for (name, count) in self.threads() {
            out += &format!("  {:>5.1} %  {name}\n", self.share(count));
        }
        out += "\nparts (inclusive, of all samples; parts overlap):\n";
        for p in PARTS {
            let count = self.part(p);
            if count > 0 {
                out += &format!("  {:>5.1} %  {}\n", self.share(count), p.label);
            }
        }
        out += &format!("\ntop {top} functions by own samples:\n");
        for (leaf, count) in self.leaves(top) {
            let short: String = leaf.chars().take(110).collect();
            out += &format!("  {:>5.1} %  {short}\n", self.share(count));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOLDED: &str = "\
copanel-writer;clone3;copanel::writer::Writer::batch;sled::tree::Tree::apply_batch;sled::tree::Tree::split_node 3
copanel-writer;clone3;copanel::writer::Writer::batch;copanel::store::Store>::flush_blocking;__x64_sys_fdatasync;ext4_sync_file 4
copanel-writer;clone3;copanel::writer::Writer::batch;copanel::writer::Writer::command 1
tokio-rt-worker;clone3;copanel::server::conn::run;__x64_sys_sendto;tcp_sendmsg 6
tokio-rt-worker;clone3;tokio::park;__x64_sys_epoll_wait;__schedule;finish_task_switch 2
tokio-rt-worker;<dyn core::ops::function::FnOnce<()> + core::marker::Send>::call_once;mi_free 1
sled-io-3;clone3;sled::threadpool 1
sled-io-5;clone3;sled::threadpool 2
";

    fn share_of(p: &Profile, label: &str) -> f64 {
        let part = PARTS
            .iter()
            .find(|p| p.label.trim() == label)
            .expect("known part");
        p.share(p.part(part))
    }

    #[test]
    fn parts_threads_and_leaves_are_counted_from_the_folded_lines() {
        let p = Profile::parse(FOLDED).expect("parses");
        assert_eq!(p.total, 20);
        assert_eq!(share_of(&p, "writer thread (copanel-writer)"), 40.0);
        assert_eq!(
            share_of(&p, "sled: the batch into its tree (apply_batch)"),
            15.0
        );
        assert_eq!(share_of(&p, "the log's write and sync (flush)"), 20.0);
        assert_eq!(share_of(&p, "of which the kernel's fdatasync"), 20.0);
        assert_eq!(share_of(&p, "deciding commands"), 5.0);
        assert_eq!(share_of(&p, "socket writes (sendto)"), 30.0);
        assert_eq!(share_of(&p, "waiting for events (epoll_wait)"), 10.0);
        // A frame with spaces in it does not break the count; mimalloc's frames are found.
        assert_eq!(
            share_of(&p, "memory allocator (mimalloc), every thread"),
            5.0
        );
        assert_eq!(
            share_of(&p, "context switches (__schedule), every thread"),
            10.0
        );
        let threads = p.threads();
        assert_eq!(threads[0], ("tokio-rt-worker".to_owned(), 9));
        assert!(threads.contains(&("sled-io-* (all)".to_owned(), 3)));
        assert_eq!(p.leaves(1), vec![("tcp_sendmsg".to_owned(), 6)]);
        let report = p.report(3);
        assert!(report.contains("weight=20 "), "{report}");
        assert!(
            report.contains(" 40.0 %  writer thread (copanel-writer)"),
            "{report}"
        );
    }

    #[test]
    fn caret_and_equals_patterns_match_the_start_and_the_whole_frame() {
        assert!(matches("mi_free", "^mi_"));
        assert!(!matches("semi_mi_free", "^mi_"));
        assert!(matches("semi_mi_free", "mi_"));
        assert!(matches("__x64_sys_read", "=__x64_sys_read"));
        assert!(!matches("__x64_sys_readv", "=__x64_sys_read"));
    }

    #[test]
    fn a_line_without_a_count_is_an_error_naming_it() {
        let err = Profile::parse("a;b 3\na;b;c\n").err().expect("refused");
        assert!(err.contains("line 2"), "{err}");
        let err = Profile::parse("a;b x\n").err().expect("refused");
        assert!(err.contains("\"x\""), "{err}");
    }
}
