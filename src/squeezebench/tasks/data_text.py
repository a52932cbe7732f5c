"""Built-in text-to-text datasets: ``bbc-headlines`` (BBC News bodies and their headlines, offline)."""

from __future__ import annotations

from squeezebench.tasks.data import DATASETS, Dataset, DatasetOptions, _bbc_news

# What a model is asked when no --prompt is given (inside the chat template when the tokenizer has one).
BBC_HEADLINES_PROMPT = "Write a short headline for this news article.\n\n{text}"


def _bbc_headlines(arg: str, options: DatasetOptions) -> Dataset:
    """Each BBC News file starts with its headline on the first line; the rest of the file is the body.
    The topic label is kept so that --limit subsets stay balanced across the five topics."""
    news = _bbc_news(arg, options)
    examples = []
    for ex in news.examples:
        headline, _, body = ex["text"].strip().partition("\n")
        if headline.strip() and body.strip():
            examples.append({"text": body.strip(), "target": headline.strip(), "label": ex["label"]})
    return Dataset("bbc-headlines", examples, news.label_names,
                   dict(news.meta, task="headline generation: input = article body, reference = first line",
                        prompt=BBC_HEADLINES_PROMPT, skipped_without_body=len(news.examples) - len(examples)))


DATASETS.register("bbc-headlines", _bbc_headlines)
