//! Where a request's prompt text lives, by route.

use serde_json::Value;

use crate::openai::ModelRoute;

/// The body field named in a content error's `param`.
pub fn field(route: ModelRoute) -> &'static str {
    match route {
        ModelRoute::Chat => "messages",
        ModelRoute::Embeddings | ModelRoute::Responses => "input",
        ModelRoute::Images => "prompt",
        ModelRoute::Passthrough | ModelRoute::Realtime => "body",
    }
}

/// Every prompt string in `body`, mutable so redaction can replace it in place.
pub fn texts_mut(route: ModelRoute, body: &mut Value) -> Vec<&mut String> {
    let mut texts = Vec::new();
    let Value::Object(fields) = body else {
        return texts;
    };
    for (name, value) in fields.iter_mut() {
        match (route, name.as_str()) {
            (ModelRoute::Chat, "messages") => {
                for message in as_array(value) {
                    if let Some(content) = message.get_mut("content") {
                        content_texts(content, &mut texts);
                    }
                }
            }
            (ModelRoute::Embeddings, "input") => content_texts(value, &mut texts),
            (ModelRoute::Responses, "instructions") | (ModelRoute::Images, "prompt") => {
                if let Value::String(text) = value {
                    texts.push(text);
                }
            }
            (ModelRoute::Responses, "input") => match value {
                Value::String(text) => texts.push(text),
                Value::Array(items) => {
                    for item in items {
                        if item.get("content").is_some() {
                            if let Some(content) = item.get_mut("content") {
                                content_texts(content, &mut texts);
                            }
                        } else {
                            content_texts(item, &mut texts);
                        }
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
    texts
}

/// A string, a part with `text`, or a list of those.
fn content_texts<'a>(content: &'a mut Value, texts: &mut Vec<&'a mut String>) {
    match content {
        Value::String(text) => texts.push(text),
        Value::Array(parts) => {
            for part in parts {
                content_texts(part, texts);
            }
        }
        Value::Object(fields) => {
            if let Some(Value::String(text)) = fields.get_mut("text") {
                texts.push(text);
            }
        }
        _ => {}
    }
}

fn as_array(value: &mut Value) -> &mut [Value] {
    match value {
        Value::Array(items) => items,
        _ => &mut [],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn collected(route: ModelRoute, mut body: Value) -> Vec<String> {
        texts_mut(route, &mut body)
            .into_iter()
            .map(|t| t.clone())
            .collect()
    }

    #[test]
    fn every_route_names_its_prompt_fields() {
        let chat = json!({"model": "m", "messages": [
            {"role": "system", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "image_url", "image_url": {"url": "u"}}]}
        ]});
        assert_eq!(collected(ModelRoute::Chat, chat), ["a", "b"]);
        assert_eq!(
            collected(ModelRoute::Embeddings, json!({"input": ["x", "y"]})),
            ["x", "y"]
        );
        let responses = json!({"instructions": "i", "input": [{"role": "user", "content": [{"type": "input_text", "text": "t"}]}]});
        assert_eq!(collected(ModelRoute::Responses, responses), ["t", "i"]);
        assert_eq!(collected(ModelRoute::Images, json!({"prompt": "p"})), ["p"]);
        assert!(collected(ModelRoute::Passthrough, json!({"prompt": "p"})).is_empty());
    }
}
