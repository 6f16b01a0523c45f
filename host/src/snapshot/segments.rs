//! A snapshot's data segments, made few.
//!
//! wasmtime fills a new instance's memory from a copy-on-write image, but
//! it still walks every data segment of every module as it sets the
//! instance up: each segment's bounds are written into the instance's
//! context, for `memory.init`. wizer's snapshot keeps a module's original
//! segments as empty passive ones, so that their indices hold, and writes
//! the memory `init` left as up to 10,000 active ones. The hello Go guest's
//! snapshot has 38,078, and walking them was most of its ~90 µs instance
//! (docs/PERFORMANCE.md, "Go's snapshot instance, profiled").
//!
//! [`compact`] rewrites the data section of each core module whose code
//! names no data segment (no `memory.init`, `data.drop`, `array.new_data`
//! or `array.init_data`). Such a module cannot tell its segments apart
//! once it is instantiated, only read the bytes they wrote. So:
//! * its passive segments are dropped: nothing could read them;
//! * its active segments are merged where at most [`GAP`] bytes separate
//!   them, the gap written as the zeros it holds anyway — when every one
//!   has a constant offset into a memory the module defines (so it is new
//!   and zeroed) and none overlaps another (so their order does not
//!   matter). Otherwise (an imported memory, whose bytes another module
//!   may have written; an offset read from a global) they stay as they
//!   were, in their order.
//!
//! The zeros written into gaps are at most as many bytes as the segments
//! hold: past that, segments stay apart. (wizer copies a module it did not
//! run as it was, so a hostile one could space 100,000 empty segments 4 KiB
//! apart and ask for 400 MB of zeros.) A `name` section loses its
//! data-segment names, which would name the old indices.
//!
//! The memory an instance starts with is unchanged, byte for byte, and so
//! is whether instantiation traps: a merged segment ends where the last of
//! its parts did. Only the top-level modules of the component are
//! rewritten (where wizer puts them); anything nested is copied as it was.

use std::borrow::Cow;
use std::ops::Range;

use anyhow::Context as _;
use wasm_encoder::{
    ComponentSectionId, ConstExpr, CustomSection, DataCountSection, DataSection, RawSection,
};
use wasmparser::{BinaryReader, DataKind, Operator, Parser, Payload, TypeRef};

/// The most zero bytes written to join two active segments: a host page.
/// Wider gaps keep their segments apart, so a sparse memory's segments do
/// not become megabytes of zeros.
pub(crate) const GAP: u64 = 4096;

/// A component after [`compact`]: its bytes, and its modules' data
/// segments before and after.
pub(crate) struct Compacted {
    pub(crate) bytes: Vec<u8>,
    pub(crate) before: usize,
    pub(crate) after: usize,
}

/// `component` with the data segments of its top-level modules made few
/// (see the module docs).
///
/// # Errors
/// When it does not parse: wizer wrote it, so that is a bug.
pub(crate) fn compact(component: &[u8]) -> anyhow::Result<Compacted> {
    let mut out = wasm_encoder::Component::new();
    let (mut before, mut after) = (0, 0);
    let mut depth = 0u32;
    for payload in Parser::new(0).parse_all(component) {
        let payload = payload.context("parsing the snapshot")?;
        match &payload {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ModuleSection {
                unchecked_range, ..
            } if depth == 1 => {
                let module = &component[unchecked_range.clone()];
                let rewritten = compact_module(module).with_context(|| {
                    format!(
                        "rewriting the data segments of the module at byte {}",
                        unchecked_range.start
                    )
                })?;
                before += rewritten.before;
                after += rewritten.after;
                out.section(&RawSection {
                    id: ComponentSectionId::CoreModule as u8,
                    data: rewritten.bytes.as_deref().unwrap_or(module),
                });
            }
            _ if depth == 1 => {
                if let Some((id, range)) = payload.as_section() {
                    out.section(&RawSection {
                        id,
                        data: &component[range],
                    });
                }
            }
            // Inside a module or a nested component: copied whole with it.
            _ => {}
        }
    }
    Ok(Compacted {
        bytes: out.finish(),
        before,
        after,
    })
}

/// One module's rewrite: its new bytes (`None` when nothing changes) and
/// its segment counts.
struct Module {
    bytes: Option<Vec<u8>>,
    before: usize,
    after: usize,
}

/// An active segment at a constant offset.
struct Segment<'a> {
    memory: u32,
    offset: u64,
    data: &'a [u8],
}

fn compact_module(module: &[u8]) -> anyhow::Result<Module> {
    // Each memory's index type (`true` for 64-bit), imported ones first.
    let mut memory64 = Vec::new();
    let mut imported_memories = 0u32;
    let mut data = None;
    let mut names_segments = false;
    for payload in Parser::new(0).parse_all(module) {
        match payload? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    if let TypeRef::Memory(memory) = import?.ty {
                        memory64.push(memory.memory64);
                        imported_memories += 1;
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    memory64.push(memory?.memory64);
                }
            }
            Payload::DataSection(reader) => data = Some(reader),
            Payload::CodeSectionEntry(body) if !names_segments => {
                let mut ops = body.get_operators_reader()?;
                while !ops.eof() {
                    names_segments |= matches!(
                        ops.read()?,
                        Operator::MemoryInit { .. }
                            | Operator::DataDrop { .. }
                            | Operator::ArrayNewData { .. }
                            | Operator::ArrayInitData { .. }
                    );
                }
            }
            _ => {}
        }
    }
    let Some(data) = data else {
        return Ok(Module {
            bytes: None,
            before: 0,
            after: 0,
        });
    };
    let before = data.count() as usize;
    let unchanged = Module {
        bytes: None,
        before,
        after: before,
    };
    if names_segments {
        return Ok(unchanged);
    }

    // The active segments' raw encodings, in order, and the same as
    // constant offsets when every one has one into a defined memory.
    let mut active: Vec<Range<usize>> = Vec::new();
    let mut constant: Option<Vec<Segment>> = Some(Vec::new());
    for segment in data {
        let segment = segment?;
        let DataKind::Active {
            memory_index,
            offset_expr,
        } = segment.kind
        else {
            continue;
        };
        active.push(segment.range.clone());
        // A constant is one `i32.const` or `i64.const`, then `end`.
        let mut ops = offset_expr.get_operators_reader();
        let offset = match ops.read()? {
            Operator::I32Const { value } => Some(u64::from(value as u32)),
            Operator::I64Const { value } => Some(value as u64),
            _ => None,
        }
        .filter(|_| matches!(ops.read(), Ok(Operator::End)) && ops.eof());
        match (offset, &mut constant) {
            (Some(offset), Some(list)) if memory_index >= imported_memories => list.push(Segment {
                memory: memory_index,
                offset,
                data: segment.data,
            }),
            _ => constant = None,
        }
    }

    let mut section = DataSection::new();
    match constant.and_then(merge) {
        Some(merged) => {
            for (memory, offset, bytes) in merged {
                let is64 = memory64.get(memory as usize).copied().unwrap_or(false);
                let offset = if is64 {
                    ConstExpr::i64_const(offset as i64)
                } else {
                    ConstExpr::i32_const(offset as u32 as i32)
                };
                section.active(memory, &offset, bytes);
            }
        }
        None => {
            for range in &active {
                section.raw(&module[range.clone()]);
            }
        }
    }
    let after = section.len() as usize;
    if after == before {
        return Ok(unchanged);
    }

    let mut out = wasm_encoder::Module::new();
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload?;
        match payload {
            Payload::DataSection(_) => {
                out.section(&section);
            }
            Payload::DataCountSection { .. } => {
                out.section(&DataCountSection {
                    count: section.len(),
                });
            }
            Payload::CustomSection(custom) if custom.name() == "name" => {
                out.section(&CustomSection {
                    name: Cow::Borrowed("name"),
                    data: Cow::Owned(without_data_names(custom.data())?),
                });
            }
            _ => {
                if let Some((id, range)) = payload.as_section() {
                    out.section(&RawSection {
                        id,
                        data: &module[range],
                    });
                }
            }
        }
    }
    Ok(Module {
        bytes: Some(out.finish()),
        before,
        after,
    })
}

/// Constant segments merged across gaps of at most [`GAP`] bytes, with no
/// more zeros in all than the segments hold bytes: each memory's, by
/// offset, as `(memory, offset, bytes)`. `None` when two overlap (then the
/// later one's bytes win, and merging would lose that) or one ends past
/// 2^64 (it traps; left as it is).
fn merge(mut segments: Vec<Segment<'_>>) -> Option<Vec<(u32, u64, Vec<u8>)>> {
    let mut zeros: u64 = segments.iter().map(|s| s.data.len() as u64).sum();
    segments.sort_by_key(|s| (s.memory, s.offset));
    let mut merged: Vec<(u32, u64, Vec<u8>)> = Vec::new();
    for s in segments {
        s.offset.checked_add(s.data.len() as u64)?;
        if let Some((memory, offset, bytes)) = merged.last_mut() {
            if *memory == s.memory {
                let end = *offset + bytes.len() as u64;
                if s.data.is_empty() && s.offset <= end {
                    // Writes nothing, and is in bounds if the other is.
                    continue;
                }
                if s.offset < end {
                    return None;
                }
                let gap = s.offset - end;
                if gap <= GAP.min(zeros) {
                    zeros -= gap;
                    bytes.resize(bytes.len() + gap as usize, 0);
                    bytes.extend_from_slice(s.data);
                    continue;
                }
            }
        }
        merged.push((s.memory, s.offset, s.data.to_vec()));
    }
    Some(merged)
}

/// The subsection of a `name` section that names data segments.
const DATA_NAMES: u8 = 9;

/// The contents of a `name` section without its data-segment names.
fn without_data_names(section: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut reader = BinaryReader::new(section, 0);
    let mut kept = Vec::with_capacity(section.len());
    while !reader.eof() {
        let start = reader.original_position();
        let id = reader.read_u8()?;
        let len = reader.read_var_u32()?;
        reader.read_bytes(len as usize)?;
        if id != DATA_NAMES {
            kept.extend_from_slice(&section[start..reader.original_position()]);
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{Engine, Instance, Memory, MemoryType, Module as Compiled, Store};

    /// A module's bytes, and how `compact_module` rewrote them.
    fn rewrite(wat: &str) -> (Vec<u8>, Module) {
        let original = wat::parse_str(wat).unwrap();
        let rewritten = compact_module(&original).unwrap();
        (original, rewritten)
    }

    /// The memory exported as `m` after instantiating `module` (with a
    /// page of `x`s as its import `env.m`, if it has one), or the error.
    fn memory_after(module: &[u8]) -> Result<Vec<u8>, String> {
        let engine = Engine::default();
        let module = Compiled::new(&engine, module).map_err(|e| e.to_string())?;
        let mut store = Store::new(&engine, ());
        let mut imports = Vec::new();
        if module.imports().len() == 1 {
            let memory = Memory::new(&mut store, MemoryType::new(1, None)).unwrap();
            memory.data_mut(&mut store).fill(b'x');
            imports.push(memory.into());
        }
        let instance =
            Instance::new(&mut store, &module, &imports).map_err(|e| format!("{e:?}"))?;
        let memory = instance.get_memory(&mut store, "m").unwrap();
        Ok(memory.data(&store).to_vec())
    }

    /// `wat` rewritten to `after` segments, and an instance of it starts
    /// (or fails to) exactly as one of the original does.
    fn same_start(wat: &str, after: usize) -> Module {
        let (original, rewritten) = rewrite(wat);
        assert_eq!(rewritten.after, after, "segments after");
        let bytes = rewritten.bytes.as_deref().unwrap_or(&original);
        wasmparser::Validator::new().validate_all(bytes).unwrap();
        let (before, now) = (memory_after(&original), memory_after(bytes));
        match (&before, &now) {
            (Ok(a), Ok(b)) => assert!(a == b, "memory differs"),
            (Err(_), Err(_)) => {}
            _ => panic!("original {:?}, rewritten {:?}", before.is_ok(), now.is_ok()),
        }
        rewritten
    }

    #[test]
    fn drops_passive_segments_and_merges_across_small_gaps() {
        let rewritten = same_start(
            r#"(module
                (memory (export "m") 2)
                (data "never read")
                (data "")
                (data (i32.const 0) "ab")
                (data (i32.const 10) "cd")
                (data (i32.const 4) "")
                (data (i32.const 20000) "apart"))"#,
            2,
        );
        assert_eq!(rewritten.before, 6);
        assert!(rewritten.bytes.is_some());
    }

    #[test]
    fn rewrites_the_data_count_to_match() {
        same_start(
            r#"(module
                (memory (export "m") 1)
                (func (export "f") (result i32) i32.const 0)
                (data "")
                (data (i32.const 1) "a")
                (data (i32.const 3) "b"))"#,
            1,
        );
        // With a data count section, as a bulk-memory toolchain writes.
        let wat = r#"(module
            (memory (export "m") 1)
            (data "")
            (data (i32.const 1) "a")
            (data (i32.const 3) "b"))"#;
        let mut module = wasm_encoder::Module::new();
        let original = wat::parse_str(wat).unwrap();
        for payload in Parser::new(0).parse_all(&original) {
            let payload = payload.unwrap();
            if let Payload::DataSection(_) = payload {
                module.section(&DataCountSection { count: 3 });
            }
            if let Some((id, range)) = payload.as_section() {
                module.section(&RawSection {
                    id,
                    data: &original[range],
                });
            }
        }
        let with_count = module.finish();
        let rewritten = compact_module(&with_count).unwrap();
        let bytes = rewritten.bytes.unwrap();
        wasmparser::Validator::new().validate_all(&bytes).unwrap();
        assert_eq!(memory_after(&bytes), memory_after(&with_count));
    }

    #[test]
    fn leaves_a_module_that_names_its_segments() {
        for code in [
            "(memory.init 0 (i32.const 0) (i32.const 0) (i32.const 1))",
            "(data.drop 1)",
        ] {
            let (_, rewritten) = rewrite(&format!(
                r#"(module
                    (memory (export "m") 1)
                    (data "p")
                    (data (i32.const 0) "a")
                    (data (i32.const 1) "b")
                    (func {code}))"#
            ));
            assert!(rewritten.bytes.is_none(), "{code}");
            assert_eq!((rewritten.before, rewritten.after), (3, 3));
        }
    }

    #[test]
    fn overlapping_segments_keep_their_order() {
        // The later segment's bytes win: "abba", not "aaaa".
        let rewritten = same_start(
            r#"(module
                (memory (export "m") 1)
                (data "")
                (data (i32.const 0) "aaaa")
                (data (i32.const 1) "bb"))"#,
            2,
        );
        assert!(rewritten.bytes.is_some(), "the passive one still goes");
        let bytes = rewritten.bytes.unwrap();
        assert_eq!(&memory_after(&bytes).unwrap()[..4], b"abba");
    }

    #[test]
    fn an_imported_memory_keeps_its_segments() {
        // Its gaps hold another module's bytes ('x'), not zeros.
        same_start(
            r#"(module
                (import "env" "m" (memory 1))
                (export "m" (memory 0))
                (data (i32.const 0) "a")
                (data (i32.const 2) "b"))"#,
            2,
        );
    }

    #[test]
    fn an_offset_from_a_global_keeps_the_segments() {
        same_start(
            r#"(module
                (memory (export "m") 1)
                (global $at i32 (i32.const 1))
                (data "")
                (data (i32.const 0) "aaaa")
                (data (global.get $at) "b")
                (data (i32.const 6) "c"))"#,
            3,
        );
    }

    #[test]
    fn a_merged_segment_traps_where_its_parts_did() {
        let wat = |second: u32| {
            format!(
                r#"(module
                    (memory (export "m") 1)
                    (data (i32.const 65530) "abc")
                    (data (i32.const {second}) "xyz"))"#
            )
        };
        // In bounds, and one past them.
        assert!(memory_after(&wat::parse_str(wat(65533)).unwrap()).is_ok());
        same_start(&wat(65533), 1);
        assert!(memory_after(&wat::parse_str(wat(65534)).unwrap()).is_err());
        same_start(&wat(65534), 1);
    }

    #[test]
    fn a_64_bit_memory_gets_64_bit_offsets() {
        same_start(
            r#"(module
                (memory (export "m") i64 1)
                (data (i64.const 0) "ab")
                (data (i64.const 3) "cd"))"#,
            1,
        );
    }

    #[test]
    fn writes_no_more_zeros_than_the_segments_hold() {
        // Empty or tiny segments a page apart: merging them all would
        // write ~4 KiB of zeros per byte of data.
        let spaced: String = (0..64)
            .map(|k| format!(r#"(data (i32.const {}) "x")"#, k * 4097))
            .collect();
        let rewritten = same_start(
            &format!(r#"(module (memory (export "m") 5) (data "") {spaced})"#),
            64,
        );
        assert_eq!(rewritten.before, 65);
        // With data enough, a gap of up to a page is filled, and no more.
        let page = "p".repeat(4096);
        for (second, after) in [(8192, 1), (8193, 2)] {
            same_start(
                &format!(
                    r#"(module (memory (export "m") 1)
                        (data (i32.const 0) "{page}") (data (i32.const {second}) "q"))"#
                ),
                after,
            );
        }
    }

    #[test]
    fn a_segment_ending_past_the_address_space_is_left_to_trap() {
        let rewritten = same_start(
            r#"(module
                (memory (export "m") i64 1)
                (data (i64.const -2) "abc")
                (data (i64.const -1) "z"))"#,
            2,
        );
        assert!(rewritten.bytes.is_none());
    }

    #[test]
    fn the_name_section_loses_the_old_segment_names() {
        let (_, rewritten) = rewrite(
            r#"(module
                (func $named)
                (memory (export "m") 1)
                (data $gone "")
                (data $first (i32.const 0) "a")
                (data $second (i32.const 2) "b"))"#,
        );
        let bytes = rewritten.bytes.unwrap();
        wasmparser::Validator::new().validate_all(&bytes).unwrap();
        let mut subsections = Vec::new();
        for payload in Parser::new(0).parse_all(&bytes) {
            if let Payload::CustomSection(custom) = payload.unwrap() {
                if let wasmparser::KnownCustom::Name(names) = custom.as_known() {
                    for name in names {
                        subsections.push(match name.unwrap() {
                            wasmparser::Name::Function(_) => "function",
                            wasmparser::Name::Data(_) => "data",
                            _ => "other",
                        });
                    }
                }
            }
        }
        assert_eq!(subsections, ["function"]);
    }

    #[test]
    fn rewrites_the_top_level_modules_of_a_component() {
        let module = r#"
            (memory 1)
            (data "")
            (data "")
            (data (i32.const 0) "a")
            (data (i32.const 2) "b")"#;
        let component = wat::parse_str(format!(
            "(component (core module {module}) (component (core module {module})))"
        ))
        .unwrap();
        let compacted = compact(&component).unwrap();
        assert_eq!((compacted.before, compacted.after), (4, 1));
        wasmparser::Validator::new()
            .validate_all(&compacted.bytes)
            .unwrap();
        // The nested component's module is as it was.
        let counts: Vec<u32> = Parser::new(0)
            .parse_all(&compacted.bytes)
            .filter_map(|p| match p.unwrap() {
                Payload::DataSection(reader) => Some(reader.count()),
                _ => None,
            })
            .collect();
        assert_eq!(counts, [1, 4]);
    }
}
