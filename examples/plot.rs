//! Draws `docs/latency-vs-rate.svg` for BENCHMARKS.md from the CSV that `examples/load.rs
//! --csv` writes: p99 command-to-delivery latency (log scale) against delivered events/s, one
//! line per target (copanel, bare, socketio), one point per offered rate (the median of its runs), joined
//! in the order of the offered rates.
//!
//! ```text
//! target/release/examples/plot bench.csv docs/latency-vs-rate.svg
//! ```

use plotters::prelude::*;
use std::collections::BTreeMap;
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let [csv, svg] = argv.as_slice() else {
        eprintln!("usage: plot RUNS.csv OUT.svg");
        return ExitCode::FAILURE;
    };
    match plot(csv, svg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plot: {e}");
            ExitCode::FAILURE
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// target -> [(delivered/s, p99 ms)] in the order of the offered rates (past saturation the
/// delivered rate may fall back, and the line shows it).
type Series = BTreeMap<String, Vec<(f64, f64)>>;

fn read(csv: &str) -> Result<Series, String> {
    let text = std::fs::read_to_string(csv).map_err(|e| format!("cannot read {csv}: {e}"))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty CSV")?.split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or(format!("{csv}: no column {name:?}"))
    };
    let (t, o, d, p) = (
        col("target")?,
        col("offered_cmd_s")?,
        col("delivered_ev_s")?,
        col("p99_ms")?,
    );
    // (target, offered) -> runs
    let mut runs: BTreeMap<(String, u64), Vec<(f64, f64)>> = BTreeMap::new();
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let get = |c: usize| {
            f.get(c)
                .copied()
                .ok_or(format!("line {}: short row", i + 2))
        };
        let num = |c: usize| -> Result<f64, String> {
            get(c)?
                .parse::<f64>()
                .map_err(|e| format!("line {}: column {c}: {e}", i + 2))
        };
        runs.entry((get(t)?.to_owned(), num(o)? as u64))
            .or_default()
            .push((num(d)?, num(p)?));
    }
    let mut series = Series::new();
    for ((target, _), v) in runs {
        let delivered = median(v.iter().map(|x| x.0).collect());
        let p99 = median(v.iter().map(|x| x.1).collect());
        series.entry(target).or_default().push((delivered, p99));
    }
    Ok(series)
}

fn plot(csv: &str, svg: &str) -> Result<(), String> {
    let series = read(csv)?;
    let points = series.values().flatten();
    let x_max = points.clone().map(|p| p.0).fold(1.0, f64::max) * 1.1;
    let y_max = points.clone().map(|p| p.1).fold(1.0, f64::max) * 2.0;
    let y_min = points
        .map(|p| p.1)
        .fold(f64::MAX, f64::min)
        .clamp(0.01, 1.0)
        / 2.0;
    let root = SVGBackend::new(svg, (800, 500)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| format!("drawing {svg}: {e}");
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "p99 command-to-delivery latency vs delivered events/s",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("delivered events/s (median of runs)")
        .y_desc("p99 latency, ms (log)")
        .x_label_formatter(&|x| format!("{:.0}k", x / 1000.0))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(|x| e(&x))?;
    let colours = [RED, BLUE, GREEN, MAGENTA];
    for (i, (target, pts)) in series.iter().enumerate() {
        let c = colours[i % colours.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(target.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    eprintln!("plot: wrote {svg}");
    Ok(())
}
