"""The SOC side: what analysts use every day — the alert CLI (`ringfence alerts`) and the web console.

Laid out as the rest of the pipeline: pure rendering and decisions (`tree_layout`, `terminal`,
`html`, `svg`, `actions`, `filters`) that tests drive with inline alerts, and thin Kafka adapters
(`kafka_io`, `console_feeds`) around them.
"""
