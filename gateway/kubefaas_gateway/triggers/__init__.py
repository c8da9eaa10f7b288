"""Event triggers: schedules and message queues that invoke functions through the durable
async path (docs/triggers.md; docs/architecture.md, "Triggers").

`runner.TriggerRunner` keeps one task per trigger of the registry's functions: a
`schedule.ScheduleLoop` or a `queue.QueueLoop` over a `source.Source` (Redis Streams in
`redis_source`, NATS JetStream in `nats_source`). `board.TriggerBoard` holds what they last
did, for `GET /internal/triggers`, the metrics and the scaling signals.
"""
