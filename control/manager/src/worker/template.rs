//! Swarm's placeholders in a task's environment: `{{.Service.Name}}`,
//! `{{.Task.Slot}}` and the rest are replaced by the task's values when the
//! node starts it, as swarmkit's template package does for containers.

/// The values a task's placeholders stand for.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// `{{.Service.ID}}`.
    pub service_id: String,
    /// `{{.Service.Name}}`.
    pub service_name: String,
    /// `{{.Task.ID}}`.
    pub task_id: String,
    /// `{{.Task.Name}}`: `web.1.<id>`.
    pub task_name: String,
    /// `{{.Task.Slot}}`: the slot, or the node id for global services.
    pub task_slot: String,
    /// `{{.Node.ID}}`.
    pub node_id: String,
    /// `{{.Node.Hostname}}`.
    pub node_hostname: String,
}

impl Context {
    fn value(&self, name: &str) -> Option<&str> {
        Some(match name {
            ".Service.ID" => &self.service_id,
            ".Service.Name" => &self.service_name,
            ".Task.ID" => &self.task_id,
            ".Task.Name" => &self.task_name,
            ".Task.Slot" => &self.task_slot,
            ".Node.ID" => &self.node_id,
            ".Node.Hostname" => &self.node_hostname,
            _ => return None,
        })
    }
}

/// `text` with every `{{ .Placeholder }}` replaced; an unknown placeholder or
/// an unclosed `{{` is an error naming it.
pub fn expand(text: &str, ctx: &Context) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("unclosed placeholder in {text:?}: missing '}}}}'"))?;
        let name = after[..close].trim();
        let value = ctx.value(name).ok_or_else(|| {
            format!(
                "unknown placeholder {{{{{name}}}}} in {text:?}: use .Service.ID, .Service.Name, .Task.ID, .Task.Name, .Task.Slot, .Node.ID or .Node.Hostname"
            )
        })?;
        out.push_str(value);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            service_id: "sid".into(),
            service_name: "web".into(),
            task_id: "tid".into(),
            task_name: "web.2.tid".into(),
            task_slot: "2".into(),
            node_id: "nid".into(),
            node_hostname: "node1".into(),
        }
    }

    #[test]
    fn placeholders_are_replaced() {
        assert_eq!(
            expand(
                "{{.Service.Name}}-{{ .Task.Slot }}@{{.Node.Hostname}}",
                &ctx()
            )
            .unwrap(),
            "web-2@node1"
        );
        assert_eq!(
            expand(
                "{{.Task.Name}} {{.Task.ID}} {{.Node.ID}} {{.Service.ID}}",
                &ctx()
            )
            .unwrap(),
            "web.2.tid tid nid sid"
        );
        assert_eq!(expand("plain", &ctx()).unwrap(), "plain");
    }

    #[test]
    fn unknown_and_unclosed_placeholders_are_errors() {
        let e = expand("{{.Node.Color}}", &ctx()).unwrap_err();
        assert!(e.contains(".Node.Color"), "{e}");
        let e = expand("x {{.Task.Slot", &ctx()).unwrap_err();
        assert!(e.contains("unclosed"), "{e}");
    }
}
