//! The sensitivity bar chart (`onnxq sensitivity --plot FILE.svg`): one row
//! per node, most harmful first; a bar per measurement (worst output SQNR
//! with only that node quantized, and with all but it quantized); the
//! gate's threshold and the all-quantized SQNR as vertical lines. Plain
//! SVG 1.1 text, no scripts, readable in any browser.

use super::Sensitivity;

const ROW: f64 = 18.0;
const LABEL: f64 = 300.0;
const PLOT: f64 = 460.0;
const TOP: f64 = 58.0;
/// SQNR beyond this is drawn at the edge (exact results are 300 dB).
const CAP_DB: f64 = 80.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let tail: String = s
        .chars()
        .rev()
        .take(n - 1)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

/// The chart as SVG text.
pub fn bar_chart(s: &Sensitivity, title: &str) -> String {
    let finite = |v: f64| {
        if v.is_finite() {
            v.clamp(0.0, CAP_DB)
        } else {
            0.0
        }
    };
    let mut max = finite(s.all.worst_sqnr_db).max(s.thresholds.min_sqnr_db);
    for n in &s.nodes {
        for sc in [&n.only, &n.all_but].into_iter().flatten() {
            max = max.max(finite(sc.worst_sqnr_db));
        }
    }
    let max = (max / 10.0).ceil().max(1.0) * 10.0;
    let x = |db: f64| LABEL + PLOT * finite(db) / max;
    let both = s
        .nodes
        .iter()
        .any(|n| n.only.is_some() && n.all_but.is_some());
    let bar_h = if both { ROW / 2.0 - 1.0 } else { ROW - 4.0 };
    let height = TOP + ROW * s.nodes.len() as f64 + 40.0;
    let width = LABEL + PLOT + 40.0;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    o += &format!(
        "<text x=\"8\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{}</text>\n",
        esc(title)
    );
    o += &format!(
        "<text x=\"8\" y=\"32\">worst output SQNR (dB) on {} samples; most harmful node first</text>\n",
        s.samples
    );
    // Legend.
    let mut lx = 8.0;
    for (color, label, shown) in [
        (
            "#3b6fb6",
            "only this node quantized",
            s.nodes.iter().any(|n| n.only.is_some()),
        ),
        (
            "#e08a2c",
            "all but this node quantized",
            s.nodes.iter().any(|n| n.all_but.is_some()),
        ),
    ] {
        if shown {
            o += &format!(
                "<rect x=\"{lx}\" y=\"40\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"49\">{label}</text>\n",
                lx + 14.0
            );
            lx += 190.0;
        }
    }
    o += &format!(
        "<line x1=\"{lx}\" y1=\"45\" x2=\"{}\" y2=\"45\" stroke=\"#c0392b\" stroke-width=\"2\"/><text x=\"{}\" y=\"49\">gate {} dB</text>\n",
        lx + 14.0,
        lx + 18.0,
        s.thresholds.min_sqnr_db
    );
    // Grid and axis.
    let bottom = TOP + ROW * s.nodes.len() as f64;
    let mut t = 0.0;
    while t <= max + 1e-9 {
        let gx = x(t);
        o += &format!(
            "<line x1=\"{gx:.1}\" y1=\"{TOP}\" x2=\"{gx:.1}\" y2=\"{bottom}\" stroke=\"#e5e5e5\"/><text x=\"{gx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t}</text>\n",
            bottom + 14.0
        );
        t += 10.0;
    }
    for (i, n) in s.nodes.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        o += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            LABEL - 6.0,
            y + ROW / 2.0 + 4.0,
            esc(&format!("{} ({})", shorten(&n.node, 36), n.op))
        );
        let mut by = y + 2.0;
        for (sc, color) in [(&n.only, "#3b6fb6"), (&n.all_but, "#e08a2c")] {
            let Some(sc) = sc else { continue };
            let w = x(sc.worst_sqnr_db) - LABEL;
            o += &format!(
                "<rect x=\"{LABEL}\" y=\"{by:.1}\" width=\"{w:.1}\" height=\"{bar_h:.1}\" fill=\"{color}\"><title>{}: {:.1} dB</title></rect>\n",
                esc(&n.node),
                sc.worst_sqnr_db
            );
            by += bar_h + 1.0;
        }
    }
    for (db, color, dash) in [
        (s.thresholds.min_sqnr_db, "#c0392b", ""),
        (s.all.worst_sqnr_db, "#555555", " stroke-dasharray=\"4 3\""),
    ] {
        let lx = x(db);
        o += &format!(
            "<line x1=\"{lx:.1}\" y1=\"{TOP}\" x2=\"{lx:.1}\" y2=\"{bottom}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>\n"
        );
    }
    o += &format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#555555\">all quantized: {:.1} dB</text>\n",
        x(s.all.worst_sqnr_db) + 4.0,
        TOP - 2.0,
        s.all.worst_sqnr_db
    );
    o += "</svg>\n";
    o
}
