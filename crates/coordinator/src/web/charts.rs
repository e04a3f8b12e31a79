//! Charts as inline SVG (no script, readable by screen readers through their titles).

use maud::{html, Markup};

/// A line through `values` (oldest first), `width`×`height` pixels; flat when all are equal.
pub fn sparkline(values: &[i64], width: u32, height: u32, label: &str) -> Markup {
    let points = polyline_points(values, width, height);
    html! {
        svg class="sparkline" width=(width) height=(height) viewBox=(format!("0 0 {width} {height}"))
            role="img" aria-label=(label) {
            title { (label) }
            @if values.len() > 1 {
                polyline fill="none" stroke="currentColor" stroke-width="1.5" points=(points) {}
            }
        }
    }
}

fn polyline_points(values: &[i64], width: u32, height: u32) -> String {
    let (Some(min), Some(max)) = (values.iter().min(), values.iter().max()) else { return String::new() };
    let span = (max - min).max(1) as f64;
    let step = f64::from(width) / (values.len().max(2) - 1) as f64;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = i as f64 * step;
            let y = f64::from(height) - 1.0 - (v - min) as f64 / span * f64::from(height - 2);
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One bar per value in 0.0..=1.0 (e.g. uptime per day), oldest first.
pub fn bars(fractions: &[f64], width: u32, height: u32, label: &str) -> Markup {
    let slot = f64::from(width) / fractions.len().max(1) as f64;
    html! {
        svg class="bars" width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) role="img"
            aria-label=(label) {
            title { (label) }
            @for (i, fraction) in fractions.iter().enumerate() {
                @let bar = fraction.clamp(0.0, 1.0) * f64::from(height);
                rect x=(format!("{:.1}", i as f64 * slot + 1.0)) y=(format!("{:.1}", f64::from(height) - bar))
                    width=(format!("{:.1}", (slot - 2.0).max(1.0))) height=(format!("{bar:.1}")) {
                    title { (format!("{:.0} %", fraction * 100.0)) }
                }
            }
        }
    }
}

/// The share of each of the last `days` days a device was online (ready or hired), from its
/// state changes (oldest first) and its state before the first of them.
pub fn uptime_by_day(changes: &[(i64, bool)], online_before: bool, now_ms: i64, days: u32) -> Vec<f64> {
    const DAY_MS: i64 = 86_400_000;
    let start = now_ms - i64::from(days) * DAY_MS;
    (0..days)
        .map(|day| {
            let (from, to) = (start + i64::from(day) * DAY_MS, start + i64::from(day + 1) * DAY_MS);
            let mut online = online_before;
            let mut at = from;
            let mut up = 0;
            for &(when, now_online) in changes {
                if when <= from {
                    online = now_online;
                    continue;
                }
                if when >= to {
                    break;
                }
                if online {
                    up += when - at;
                }
                (at, online) = (when, now_online);
            }
            if online {
                up += to - at;
            }
            up as f64 / DAY_MS as f64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_counts_each_day_from_the_state_changes() {
        let day = 86_400_000;
        let now = 10 * day;
        // Online from the start of day 8 (of 10) to the middle of day 9.
        let changes = [(8 * day, true), (9 * day + day / 2, false)];
        let uptime = uptime_by_day(&changes, false, now, 10);
        assert_eq!(uptime.len(), 10);
        assert_eq!(&uptime[7..], &[0.0, 1.0, 0.5]);
        assert_eq!(uptime_by_day(&[], true, now, 3), [1.0, 1.0, 1.0]);
    }

    #[test]
    fn sparklines_scale_into_their_box() {
        assert_eq!(polyline_points(&[1, 3], 100, 10), "0.0,9.0 100.0,1.0");
        assert_eq!(polyline_points(&[], 100, 10), "");
        let flat = polyline_points(&[5, 5, 5], 100, 10);
        assert_eq!(flat, "0.0,9.0 50.0,9.0 100.0,9.0");
    }
}
