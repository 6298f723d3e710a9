//! The lab commands (src/cli/table/, bench): the quality table, colour tables, bench reports.

mod bench_report;
mod table_colour;
mod table_quick;
