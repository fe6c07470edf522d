//! `pyfill/status`: what the server is doing with its model, for an editor's status bar. Sent as a
//! notification on every change, and answered to a `pyfill/status` request (for clients that
//! attach late or want to poll). Protocol shape only; the states are set by the loading code.

use serde::{Deserialize, Serialize};
use tower_lsp_server::gen_lsp_types as lsp;

/// The notification's (and the request's answer's) params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub state: StatusState,
    /// One line for people: what is loading, which model is ready, what went wrong.
    pub message: String,
    /// While loading: how far, 0 to 100.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub percentage: Option<u32>,
    /// Failed because the default model is not fetched: `pyfill model fetch` fixes it.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub model_missing: bool,
    /// The model file, once known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StatusState {
    Loading,
    Ready,
    Disabled,
    Error,
}

impl Status {
    pub fn loading(model: Option<String>, percentage: u32, message: impl Into<String>) -> Self {
        Self {
            state: StatusState::Loading,
            message: message.into(),
            percentage: Some(percentage.min(100)),
            model_missing: false,
            model,
        }
    }

    pub fn ready(model: String, message: String) -> Self {
        Self {
            state: StatusState::Ready,
            message,
            percentage: None,
            model_missing: false,
            model: Some(model),
        }
    }

    pub fn disabled() -> Self {
        Self {
            state: StatusState::Disabled,
            message: "pyfill is disabled (setting `enable`)".into(),
            percentage: None,
            model_missing: false,
            model: None,
        }
    }

    pub fn error(model: Option<String>, message: String, model_missing: bool) -> Self {
        Self {
            state: StatusState::Error,
            message,
            percentage: None,
            model_missing,
            model,
        }
    }
}

/// The `pyfill/status` notification, server to client.
pub enum StatusNotification {}

impl lsp::Notification for StatusNotification {
    type Params = Status;
    const METHOD: lsp::LspNotificationMethod<'static> =
        lsp::LspNotificationMethod::Custom("pyfill/status");
    const MESSAGE_DIRECTION: lsp::MessageDirection = lsp::MessageDirection::ServerToClient;
}

/// Percent of the whole load for a stage: reading the weights is most of the time, the speed
/// measurement after it well under a second.
pub fn load_percentage(stage: crate::engine::LoadStage) -> u32 {
    match stage {
        crate::engine::LoadStage::Reading(fraction) => (fraction.clamp(0.0, 1.0) * 90.0) as u32,
        crate::engine::LoadStage::Measuring => 95,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_serialize_as_documented() {
        let s = Status::loading(Some("/m.gguf".into()), 40, "reading weights");
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"state": "loading", "message": "reading weights", "percentage": 40, "model": "/m.gguf"})
        );
        let s = Status::error(None, "no model".into(), true);
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"state": "error", "message": "no model", "modelMissing": true})
        );
        assert_eq!(
            serde_json::to_value(Status::disabled()).unwrap()["state"],
            "disabled"
        );
    }

    #[test]
    fn load_stages_map_to_rising_percentages() {
        use crate::engine::LoadStage;
        assert_eq!(load_percentage(LoadStage::Reading(0.0)), 0);
        assert_eq!(load_percentage(LoadStage::Reading(0.5)), 45);
        assert_eq!(load_percentage(LoadStage::Reading(1.0)), 90);
        assert_eq!(load_percentage(LoadStage::Reading(7.0)), 90);
        assert_eq!(load_percentage(LoadStage::Measuring), 95);
    }
}
