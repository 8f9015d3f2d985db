//! The gate's check of `docs/linux-map.md`: every kmm item the map names
//! still exists where it says, and every Linux name of [`LINUX_NAMES`] has a
//! row.
//!
//! The map's tables have the header `| Linux | kmm | file | differences |`;
//! each row holds one Linux name in backticks, one kmm item in backticks,
//! the file (relative to the repository root, under `crates/<crate>/src/`)
//! in backticks, and a non-empty description. The item is checked against
//! the file's code (comment lines, doc comments included, do not count):
//!
//! - `name!`: `macro_rules! name` in the file;
//! - `Type` (capitalised last segment): `struct`, `enum`, `trait`, `type` or
//!   `union Type` in the file;
//! - `Type::method`: `fn method` and an `impl` header naming `Type` in the
//!   file, and `Type` defined (as above) in some `.rs` file of the crate's
//!   `src`;
//! - `name` or `module::name`: `fn name` in the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cmd::Result;
use crate::root;

/// The map, relative to the repository root.
pub const MAP: &str = "docs/linux-map.md";

/// The cells of the header of every table the checker reads.
const HEADER: [&str; 4] = ["Linux", "kmm", "file", "differences"];

/// The Linux 2.6 functions, macros and structures the map must give a row.
pub const LINUX_NAMES: [&str; 74] = [
    // Page allocator.
    "alloc_pages",
    "alloc_page",
    "alloc_pages_node",
    "__alloc_pages",
    "__get_free_pages",
    "__get_free_page",
    "get_zeroed_page",
    "__get_dma_pages",
    "free_pages",
    "__free_pages",
    "free_hot_cold_page",
    "__free_pages_ok",
    "rmqueue",
    "buffered_rmqueue",
    "page_address",
    "virt_to_page",
    "pfn_to_page",
    "put_page_testzero",
    "get_page",
    "zone_watermark_ok",
    // Bootmem, nodes and zones.
    "alloc_bootmem",
    "free_area_init",
    "build_all_zonelists",
    "pg_data_t",
    "zone",
    "free_area",
    // SLAB.
    "kmem_cache_create",
    "kmem_cache_destroy",
    "kmem_cache_alloc",
    "kmem_cache_free",
    "kmem_cache_init",
    "kmem_cache_shrink",
    "kmem_getpages",
    "kmem_freepages",
    "cache_grow",
    "alloc_slabmgmt",
    "slab_destroy",
    "cache_alloc_refill",
    "cache_flusharray",
    "drain_cpu_caches",
    "cache_reap",
    "kmalloc",
    "kzalloc",
    "kfree",
    "ksize",
    "krealloc",
    "mempool_create",
    "mempool_alloc",
    "mempool_free",
    "kmem_cache",
    "slab",
    "array_cache",
    // vmalloc.
    "get_vm_area",
    "vmalloc",
    "vfree",
    "vmap",
    "vm_map_ram",
    "ioremap",
    "vm_struct",
    "vmap_area",
    // Highmem.
    "kmap",
    "kunmap",
    "kmap_high",
    "map_new_virtual",
    "flush_all_zero_pkmaps",
    "kmap_atomic",
    "kmap_local_page",
    // Per-CPU memory.
    "setup_per_cpu_areas",
    "alloc_percpu",
    "free_percpu",
    "get_cpu_var",
    "DEFINE_PER_CPU",
    // Page tables.
    "kernel_physical_mapping_init",
    "pagetable_init",
];

/// One row of a map table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Its line in the map (from 1).
    pub line: usize,
    /// The Linux name.
    pub linux: String,
    /// The kmm item: `name`, `module::name`, `Type`, `Type::method` or `name!`.
    pub item: String,
    /// The file the item is defined in, relative to the repository root.
    pub file: String,
}

/// The files the checker reads.
pub trait Tree {
    /// The text of the file at `path` (relative to the repository root), if
    /// there is one.
    fn read(&self, path: &str) -> Option<String>;
    /// The `.rs` files under the directory `dir`, at any depth (paths
    /// relative to the repository root).
    fn rust_files(&self, dir: &str) -> Vec<String>;
}

/// The repository on disk.
struct Disk(PathBuf);

impl Tree for Disk {
    fn read(&self, path: &str) -> Option<String> {
        let p = self.0.join(path);
        if p.is_file() {
            std::fs::read_to_string(p).ok()
        } else {
            None
        }
    }

    fn rust_files(&self, dir: &str) -> Vec<String> {
        fn walk(root: &Path, rel: &str, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
                return;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let path = format!("{rel}/{name}");
                match e.file_type() {
                    Ok(t) if t.is_dir() => walk(root, &path, out),
                    Ok(t) if t.is_file() && name.ends_with(".rs") => out.push(path),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.0, dir, &mut out);
        out.sort();
        out
    }
}

/// Files held in memory, by path (for tests).
impl Tree for BTreeMap<String, String> {
    fn read(&self, path: &str) -> Option<String> {
        self.get(path).cloned()
    }

    fn rust_files(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{dir}/");
        self.keys()
            .filter(|k| k.starts_with(&prefix) && k.ends_with(".rs"))
            .cloned()
            .collect()
    }
}

/// The cells of a table line: between the outer pipes, split at every pipe
/// not escaped with a backslash, trimmed.
fn cells(line: &str) -> Vec<String> {
    let t = line.trim();
    let t = t.strip_prefix('|').unwrap_or(t);
    let t = t.strip_suffix('|').unwrap_or(t);
    let mut out = vec![String::new()];
    let mut escaped = false;
    for ch in t.chars() {
        if ch == '|' && !escaped {
            out.push(String::new());
        } else {
            out.last_mut().expect("one cell at least").push(ch);
        }
        escaped = ch == '\\';
    }
    out.into_iter().map(|c| c.trim().to_string()).collect()
}

/// True for a table's separator line (`| --- | :-: |`).
fn is_separator(cells: &[String]) -> bool {
    cells.iter().all(|c| {
        let c = c.trim_matches(':');
        !c.is_empty() && c.chars().all(|ch| ch == '-')
    })
}

/// The text of a cell that is exactly one code span: `` `text` ``.
fn code_span(cell: &str) -> Option<&str> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.is_empty() && !inner.contains('`')).then_some(inner)
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// True if `item` is `name`, `a::b::name`, `Type::method` or `name!`.
fn is_item(item: &str) -> bool {
    let body = item.strip_suffix('!').unwrap_or(item);
    body.split("::").all(is_ident)
}

/// A path under `crates/<crate>/src/` ending in `.rs`, without `..`: the
/// crate's `src` directory.
fn crate_src(file: &str) -> Option<String> {
    let parts: Vec<&str> = file.split('/').collect();
    let ok = parts.len() >= 4
        && parts[0] == "crates"
        && parts[2] == "src"
        && file.ends_with(".rs")
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != "..");
    ok.then(|| format!("crates/{}/src", parts[1]))
}

/// Parses every table of the map whose header is [`HEADER`]: the rows, and
/// a message (with its line) for each malformed one.
pub fn parse(map: &str) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let lines: Vec<&str> = map.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let is_header = lines[i].trim_start().starts_with('|') && cells(lines[i]) == HEADER;
        i += 1;
        if !is_header {
            continue;
        }
        let header = i;
        if !lines
            .get(i)
            .is_some_and(|l| l.trim_start().starts_with('|') && is_separator(&cells(l)))
        {
            errors.push(format!(
                "{MAP}:{header}: a map table's header without a separator line"
            ));
            continue;
        }
        i += 1;
        while i < lines.len() && lines[i].trim_start().starts_with('|') {
            let line = i + 1;
            match parse_row(&cells(lines[i])) {
                Ok((linux, item, file)) => rows.push(Row {
                    line,
                    linux,
                    item,
                    file,
                }),
                Err(e) => errors.push(format!("{MAP}:{line}: {e}")),
            }
            i += 1;
        }
    }
    (rows, errors)
}

/// The Linux name, kmm item and file of a row's cells.
fn parse_row(c: &[String]) -> std::result::Result<(String, String, String), String> {
    if c.len() != HEADER.len() {
        return Err(format!(
            "a row has {} cells, want {} (`| Linux | kmm | file | differences |`)",
            c.len(),
            HEADER.len()
        ));
    }
    let linux = code_span(&c[0])
        .filter(|s| is_ident(s))
        .ok_or_else(|| format!("the Linux cell {:?} is not one name in backticks", c[0]))?;
    let item = code_span(&c[1]).filter(|s| is_item(s)).ok_or_else(|| {
        format!(
            "the kmm cell {:?} is not one item in backticks (`name`, `Type`, `Type::method`, `name!`)",
            c[1]
        )
    })?;
    let file = code_span(&c[2])
        .ok_or_else(|| format!("the file cell {:?} is not one path in backticks", c[2]))?;
    if c[3].is_empty() {
        return Err(format!(
            "the row of `{linux}` says nothing about the differences"
        ));
    }
    Ok((linux.to_string(), item.to_string(), file.to_string()))
}

/// The tokens of a line of code: identifiers (and numbers) whole, every
/// other non-blank character alone.
fn tokens(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, ch) in line.char_indices() {
        let word = ch.is_ascii_alphanumeric() || ch == '_';
        match (word, start) {
            (true, None) => start = Some(i),
            (true, Some(_)) => {}
            (false, s) => {
                if let Some(s) = s {
                    out.push(&line[s..i]);
                    start = None;
                }
                if !ch.is_whitespace() {
                    out.push(&line[i..i + ch.len_utf8()]);
                }
            }
        }
    }
    if let Some(s) = start {
        out.push(&line[s..]);
    }
    out
}

/// The tokens of each line of code of `text`: comment lines (`//`, `///`,
/// `//!`) left out.
fn code_lines(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(tokens)
        .collect()
}

/// True if some line of `code` has the tokens `seq` in a row.
fn has_seq(code: &[Vec<&str>], seq: &[&str]) -> bool {
    code.iter().any(|l| l.windows(seq.len()).any(|w| w == seq))
}

/// True if `code` defines the type `name` (struct, enum, trait, type alias
/// or union).
fn defines_type(code: &[Vec<&str>], name: &str) -> bool {
    ["struct", "enum", "trait", "type", "union"]
        .iter()
        .any(|kw| has_seq(code, &[kw, name]))
}

/// True if an `impl` header of `code` (a line starting with `impl` or
/// `unsafe impl`, up to its `{`) names `ty`.
fn has_impl_of(code: &[Vec<&str>], ty: &str) -> bool {
    for (n, l) in code.iter().enumerate() {
        if !matches!(l.as_slice(), ["impl", ..] | ["unsafe", "impl", ..]) {
            continue;
        }
        for t in code[n..].iter().flatten() {
            if *t == "{" || *t == ";" {
                break;
            }
            if *t == ty {
                return true;
            }
        }
    }
    false
}

/// Checks one row against the files; `Err` says what is missing.
fn check_row(row: &Row, tree: &dyn Tree) -> std::result::Result<(), String> {
    let Some(src) = crate_src(&row.file) else {
        return Err(format!(
            "`{}` is not a `.rs` file under `crates/<crate>/src/`",
            row.file
        ));
    };
    let Some(text) = tree.read(&row.file) else {
        return Err(format!("`{}` does not exist", row.file));
    };
    let code = code_lines(&text);
    let item = row.item.as_str();
    if let Some(name) = item.strip_suffix('!') {
        let name = name.rsplit("::").next().unwrap_or(name);
        return if has_seq(&code, &["macro_rules", "!", name]) {
            Ok(())
        } else {
            Err(format!("no `macro_rules! {name}` in `{}`", row.file))
        };
    }
    let segs: Vec<&str> = item.split("::").collect();
    let last = segs[segs.len() - 1];
    let capital = |s: &str| s.starts_with(|c: char| c.is_ascii_uppercase());
    if capital(last) {
        return if defines_type(&code, last) {
            Ok(())
        } else {
            Err(format!(
                "no `struct`, `enum`, `trait`, `type` or `union {last}` in `{}`",
                row.file
            ))
        };
    }
    if !has_seq(&code, &["fn", last]) {
        return Err(format!("no `fn {last}` in `{}`", row.file));
    }
    if segs.len() >= 2 && capital(segs[segs.len() - 2]) {
        let ty = segs[segs.len() - 2];
        if !has_impl_of(&code, ty) {
            return Err(format!("no `impl` of `{ty}` in `{}`", row.file));
        }
        let defined = tree
            .rust_files(&src)
            .iter()
            .filter_map(|f| tree.read(f))
            .any(|t| defines_type(&code_lines(&t), ty));
        if !defined {
            return Err(format!(
                "`{ty}` is not defined (`struct`, `enum`, `trait`, `type`, `union`) in `{src}`"
            ));
        }
    }
    Ok(())
}

/// Checks `map` against `tree`: well-formed rows, every item found, every
/// name of `names` given exactly one row. Returns the number of rows, or
/// every problem found.
pub fn check_with(
    map: &str,
    tree: &dyn Tree,
    names: &[&str],
) -> std::result::Result<usize, Vec<String>> {
    let (rows, mut errors) = parse(map);
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &rows {
        if let Some(first) = seen.insert(&row.linux, row.line) {
            errors.push(format!(
                "{MAP}:{}: `{}` has a row already (line {first})",
                row.line, row.linux
            ));
        }
        if let Err(e) = check_row(row, tree) {
            errors.push(format!(
                "{MAP}:{}: `{}` → `{}`: {e}",
                row.line, row.linux, row.item
            ));
        }
    }
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !seen.contains_key(n))
        .collect();
    if !missing.is_empty() {
        errors.push(format!("{MAP}: no row for {}", missing.join(", ")));
    }
    if errors.is_empty() {
        Ok(rows.len())
    } else {
        Err(errors)
    }
}

/// Checks `map` against `tree` with the names of [`LINUX_NAMES`].
pub fn check(map: &str, tree: &dyn Tree) -> std::result::Result<usize, Vec<String>> {
    check_with(map, tree, &LINUX_NAMES)
}

/// The gate step: checks the repository's map.
pub fn run() -> Result {
    let root = root();
    let map =
        std::fs::read_to_string(root.join(MAP)).map_err(|e| format!("cannot read {MAP}: {e}"))?;
    match check(&map, &Disk(root)) {
        Ok(n) => {
            eprintln!("xtask: {MAP}: {n} rows, every item found, every Linux name mapped");
            Ok(())
        }
        Err(errors) => Err(format!(
            "{MAP} names what does not exist ({} problem(s)):\n{}",
            errors.len(),
            errors.join("\n")
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{LINUX_NAMES, check_with, parse};

    /// A small crate: a method in one file, its type in another, a free
    /// function, a type and a macro.
    fn tree() -> BTreeMap<String, String> {
        [
            (
                "crates/buddy/src/alloc.rs",
                "//! Allocation.\nimpl<'a, C: Cpu> Buddy<'a, C> {\n    pub fn alloc_pages(&self) {}\n}\n",
            ),
            (
                "crates/buddy/src/buddy.rs",
                "/// The allocator.\npub struct Buddy<'a, C: Cpu> {\n    x: &'a C,\n}\npub(crate) fn free_all_bootmem() {}\n",
            ),
            (
                "crates/percpu/src/var.rs",
                "#[macro_export]\nmacro_rules! define_per_cpu {\n    () => {};\n}\n",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    const GOOD: &str = "\
# Map

Intro with `| Linux | kmm | file | differences |` in it.

| Linux | kmm | file | differences |
| --- | --- | --- | --- |
| `alloc_pages` | `Buddy::alloc_pages` | `crates/buddy/src/alloc.rs` | A method. |
| `free_all_bootmem` | `free_all_bootmem` | `crates/buddy/src/buddy.rs` | A function. |
| `pg_data_t` | `Buddy` | `crates/buddy/src/buddy.rs` | A type. |
| `DEFINE_PER_CPU` | `define_per_cpu!` | `crates/percpu/src/var.rs` | A macro. |
";

    const NAMES: [&str; 4] = [
        "alloc_pages",
        "free_all_bootmem",
        "pg_data_t",
        "DEFINE_PER_CPU",
    ];

    /// The errors of checking `map` over [`tree`] with [`NAMES`].
    fn errors(map: &str) -> Vec<String> {
        check_with(map, &tree(), &NAMES).expect_err("the check should fail")
    }

    fn has(errors: &[String], what: &str) -> bool {
        errors.iter().any(|e| e.contains(what))
    }

    #[test]
    fn a_good_map_passes() {
        assert_eq!(check_with(GOOD, &tree(), &NAMES), Ok(4));
        let (rows, errs) = parse(GOOD);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(rows[0].line, 7);
        assert_eq!(rows[0].item, "Buddy::alloc_pages");
        assert_eq!(rows[3].file, "crates/percpu/src/var.rs");
    }

    #[test]
    fn a_missing_file_fails() {
        let map = GOOD.replace("crates/buddy/src/alloc.rs", "crates/buddy/src/gone.rs");
        let e = errors(&map);
        assert!(
            has(&e, "`crates/buddy/src/gone.rs` does not exist"),
            "{e:?}"
        );
        let map = GOOD.replace("crates/buddy/src/alloc.rs", "docs/alloc.md");
        assert!(has(&errors(&map), "not a `.rs` file under"));
    }

    #[test]
    fn a_missing_function_fails() {
        let map = GOOD.replace(
            "`free_all_bootmem` | `crates/",
            "`free_all_lowmem` | `crates/",
        );
        let e = errors(&map);
        assert!(has(&e, "no `fn free_all_lowmem`"), "{e:?}");
    }

    #[test]
    fn a_missing_method_fails() {
        let map = GOOD.replace("`Buddy::alloc_pages`", "`Buddy::alloc_page`");
        assert!(has(&errors(&map), "no `fn alloc_page` in"));
        // The function is there, but not in an impl of that type.
        let map = GOOD.replace("`Buddy::alloc_pages`", "`Zone::alloc_pages`");
        assert!(has(&errors(&map), "no `impl` of `Zone`"));
    }

    #[test]
    fn a_method_of_an_undefined_type_fails() {
        let mut t = tree();
        t.insert(
            "crates/buddy/src/buddy.rs".into(),
            "pub(crate) fn free_all_bootmem() {}\npub struct Buddies;\n".into(),
        );
        let e = check_with(GOOD, &t, &NAMES).expect_err("Buddy is gone");
        assert!(has(&e, "`Buddy` is not defined"), "{e:?}");
    }

    #[test]
    fn a_missing_type_or_macro_fails() {
        let map = GOOD.replace("`Buddy` |", "`Node` |");
        assert!(has(&errors(&map), "`union Node` in"));
        let map = GOOD.replace("`define_per_cpu!`", "`declare_per_cpu!`");
        assert!(has(&errors(&map), "no `macro_rules! declare_per_cpu`"));
    }

    #[test]
    fn comments_are_not_definitions() {
        let mut t = tree();
        t.insert(
            "crates/buddy/src/buddy.rs".into(),
            "/// fn free_all_bootmem() {}\n// struct Buddy;\npub struct Buddy;\n".into(),
        );
        let e = check_with(GOOD, &t, &NAMES).expect_err("only a comment");
        assert!(has(&e, "no `fn free_all_bootmem`"), "{e:?}");
    }

    #[test]
    fn a_missing_linux_name_fails() {
        let e = check_with(GOOD, &tree(), &["alloc_pages", "kmap_high"])
            .expect_err("kmap_high has no row");
        assert!(has(&e, "no row for kmap_high"), "{e:?}");
        let map = GOOD.replace("| `pg_data_t` |", "| `pglist_data` |");
        assert!(has(&errors(&map), "no row for pg_data_t"));
    }

    #[test]
    fn malformed_and_duplicate_rows_fail() {
        let map = GOOD.replace(" | A macro. |", " |");
        assert!(has(&errors(&map), "a row has 3 cells"));
        let map = GOOD.replace("`define_per_cpu!`", "`define_per_cpu!`, `PerCpuVar`");
        assert!(has(&errors(&map), "is not one item in backticks"));
        let map = GOOD.replace("| A function. |", "|  |");
        assert!(has(&errors(&map), "says nothing about the differences"));
        let map = GOOD.replace("| --- | --- | --- | --- |\n", "");
        assert!(has(&errors(&map), "without a separator line"));
        let map = GOOD.replace("| `pg_data_t` |", "| `alloc_pages` |");
        let e = errors(&map);
        assert!(has(&e, "`alloc_pages` has a row already (line 7)"), "{e:?}");
    }

    #[test]
    fn escaped_pipes_stay_in_their_cell() {
        let map = GOOD.replace("A method.", r"Flags `PCD \| PWT`.");
        assert_eq!(check_with(&map, &tree(), &NAMES), Ok(4));
    }

    #[test]
    fn the_linux_names_are_distinct() {
        let mut names = LINUX_NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), LINUX_NAMES.len());
    }
}
