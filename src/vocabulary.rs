//! The health vocabulary: how bad a problem is (`Severity`), where an incident stands
//! (`IncidentState`), how an app is doing (`AppStatus`) and what a check found (`Finding`). Plain
//! data shared by the checks, recovery, alerts, the store and the dashboard; a leaf that imports
//! only the `text_enum!` helper.

use crate::text_enum::text_enum;

text_enum! {
    /// Ordered: `Low < Medium < High < Critical`.
    Severity { Low => "low", Medium => "medium", High => "high", Critical => "critical" }
}

text_enum! {
    IncidentState {
        Open => "open",
        Recovering => "recovering",
        Resolved => "resolved",
        Escalated => "escalated",
    }
}

impl IncidentState {
    /// Open, recovering and escalated: everything not resolved.
    pub const UNRESOLVED: [IncidentState; 3] = [
        IncidentState::Open,
        IncidentState::Recovering,
        IncidentState::Escalated,
    ];
}

text_enum! {
    /// Ordered from best to worst.
    AppStatus { Healthy => "healthy", Stopped => "stopped", Degraded => "degraded", Down => "down" }
}

/// What a check found wrong; the store's `observe_incident` turns it into an incident or counts
/// it against the one already open for the same kind and component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: String,
    pub severity: Severity,
    pub component: String,
    pub summary: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_enums_round_trip_and_reject_unknown_values() {
        for severity in Severity::ALL {
            assert_eq!(severity.as_str().parse::<Severity>().unwrap(), *severity);
        }
        assert!(Severity::Low < Severity::Critical);
        let error = "urgent".parse::<Severity>().unwrap_err();
        assert!(error.contains("low, medium, high, critical"), "{error}");
        assert_eq!(
            serde_json::to_string(&IncidentState::Recovering).unwrap(),
            "\"recovering\""
        );
    }
}
