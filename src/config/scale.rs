//! `[defaults]` and `[scale]`: overlaying the keys an operator set on the inherited values,
//! then checking the result as a whole (min <= max, target under the hard limit, windows,
//! rates, timeouts).

use std::time::Duration;

use super::model::ScaleSpec;
use super::raw::RawScale;
use super::validate::Checker;

/// Overlays the keys present in `raw` on `base` and checks the result as a whole.
pub(super) fn overlay_scale(
    c: &mut Checker<'_>,
    table: &str,
    base: &ScaleSpec,
    raw: &RawScale,
) -> ScaleSpec {
    let field = |key: &str| format!("{table}.{key}");
    let mut s = base.clone();
    /// Copies every key that is set in `raw` over `s`.
    macro_rules! overlay {
        ($($key:ident),*) => {$(
            if let Some(value) = raw.$key {
                s.$key = value;
            }
        )*};
    }
    overlay!(
        min_scale,
        max_scale,
        concurrency,
        concurrency_target,
        target_utilization,
        panic_threshold,
        max_scale_up_rate,
        max_scale_down_rate,
        queue_depth
    );
    // The soft target follows the hard limit unless it is given explicitly.
    if let (Some(limit), None) = (raw.concurrency, raw.concurrency_target) {
        if limit > 0 {
            s.concurrency_target = f64::from(limit);
        }
    }
    for (key, text, slot) in [
        ("stable_window", &raw.stable_window, &mut s.stable_window),
        ("panic_window", &raw.panic_window, &mut s.panic_window),
        (
            "scale_to_zero_grace",
            &raw.scale_to_zero_grace,
            &mut s.scale_to_zero_grace,
        ),
        (
            "scale_down_delay",
            &raw.scale_down_delay,
            &mut s.scale_down_delay,
        ),
        (
            "request_timeout",
            &raw.request_timeout,
            &mut s.request_timeout,
        ),
        (
            "cold_start_timeout",
            &raw.cold_start_timeout,
            &mut s.cold_start_timeout,
        ),
        ("stop_grace", &raw.stop_grace, &mut s.stop_grace),
        (
            "startup_timeout",
            &raw.startup_timeout,
            &mut s.startup_timeout,
        ),
    ] {
        *slot = c.duration(&field(key), text.as_ref(), *slot);
    }
    if let Some(text) = &raw.idle_timeout {
        // "0s" is no limit, as Knative's 0: an app can lift a limit that [defaults] sets.
        let idle = c.duration(&field("idle_timeout"), Some(text), Duration::ZERO);
        s.idle_timeout = (!idle.is_zero()).then_some(idle);
    }
    if table == "scale" && *raw == RawScale::default() {
        // Nothing set here: the result is `[defaults]`, which was checked (and reported) there.
        return s;
    }

    if s.min_scale > s.max_scale {
        c.report(
            &field("min_scale"),
            format!("{} is greater than max_scale {}", s.min_scale, s.max_scale),
        );
    }
    if s.concurrency > 0 && s.concurrency_target > f64::from(s.concurrency) {
        // Knative caps the soft target by the hard limit; say so rather than silently capping.
        c.report(
            &field("concurrency_target"),
            format!(
                "{} is above the hard limit concurrency = {}",
                s.concurrency_target, s.concurrency
            ),
        );
    }
    if !(s.concurrency_target > 0.0 && s.concurrency_target.is_finite()) {
        c.report(&field("concurrency_target"), "must be greater than 0");
    }
    if !(s.target_utilization > 0.0 && s.target_utilization <= 1.0) {
        c.report(&field("target_utilization"), "must be in (0, 1], e.g. 0.7");
    }
    if !(s.panic_threshold > 1.0 && s.panic_threshold.is_finite()) {
        c.report(
            &field("panic_threshold"),
            "must be greater than 1.0, e.g. 2.0 for 200%",
        );
    }
    if !(s.max_scale_up_rate > 1.0 && s.max_scale_up_rate.is_finite()) {
        c.report(&field("max_scale_up_rate"), "must be greater than 1.0");
    }
    if !(s.max_scale_down_rate > 1.0 && s.max_scale_down_rate.is_finite()) {
        c.report(&field("max_scale_down_rate"), "must be greater than 1.0");
    }
    if s.stable_window.is_zero() {
        c.report(&field("stable_window"), "must be longer than 0s");
    }
    if s.panic_window.is_zero() || s.panic_window > s.stable_window {
        c.report(
            &field("panic_window"),
            "must be longer than 0s and no longer than stable_window",
        );
    }
    if s.request_timeout.is_zero() {
        c.report(&field("request_timeout"), "must be longer than 0s");
    }
    if s.startup_timeout.is_zero() {
        c.report(&field("startup_timeout"), "must be longer than 0s");
    }
    if s.cold_start_timeout.is_zero() {
        c.report(&field("cold_start_timeout"), "must be longer than 0s");
    }
    if s.queue_depth == 0 {
        c.report(&field("queue_depth"), "must be at least 1");
    }
    s
}
