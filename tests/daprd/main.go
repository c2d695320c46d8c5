// Command daprd builds the real Dapr sidecar (github.com/dapr/dapr v1.18.3,
// unmodified) with only the components this project's tests use.
//
// Why this exists: prebuilt daprd release binaries cannot be downloaded here,
// so scripts/install-dapr.sh compiles daprd from Go modules. Upstream's
// cmd/daprd/main.go only works with `-tags allcomponents|stablecomponents`,
// which pull in every components-contrib component (hundreds of cloud SDKs, some
// of whose module versions the module proxy refuses). Instead this main package
// registers just the components below and then runs daprd's own entry point.
// Without the build tags, cmd/daprd/components compiles only zz_notag.go, which
// panics in init; the install script swaps that one file for
// overlay/components_empty.go with `go build -overlay`.
//
// Registered components:
//   - pubsub.redis (Redis Streams) and pubsub.in-memory
//   - pubsub.kafka (sarama), pubsub.rabbitmq, pubsub.jetstream (NATS JetStream)
//     and pubsub.mqtt3 (also under its older name, pubsub.mqtt), for the tests
//     against brokers other than Redis. The registration lines are the ones
//     daprd's own cmd/daprd/components/pubsub_*.go use, so each type gets the
//     names it has in a release build of daprd.
//   - state.redis and state.in-memory
//   - nameresolution.mdns (daprd's default resolver in self-hosted mode;
//     registering it avoids a CREATE_COMPONENT_FAILURE at startup)
package main

import (
	"github.com/dapr/components-contrib/nameresolution/mdns"
	inmemorypubsub "github.com/dapr/components-contrib/pubsub/in-memory"
	"github.com/dapr/components-contrib/pubsub/jetstream"
	"github.com/dapr/components-contrib/pubsub/kafka"
	mqtt "github.com/dapr/components-contrib/pubsub/mqtt3"
	"github.com/dapr/components-contrib/pubsub/rabbitmq"
	redispubsub "github.com/dapr/components-contrib/pubsub/redis"
	inmemorystate "github.com/dapr/components-contrib/state/in-memory"
	redisstate "github.com/dapr/components-contrib/state/redis"

	"github.com/dapr/dapr/cmd/daprd/app"
	nrloader "github.com/dapr/dapr/pkg/components/nameresolution"
	pubsubloader "github.com/dapr/dapr/pkg/components/pubsub"
	stateloader "github.com/dapr/dapr/pkg/components/state"
)

func main() {
	pubsubloader.DefaultRegistry.RegisterComponent(redispubsub.NewRedisStreams, "redis")
	pubsubloader.DefaultRegistry.RegisterComponent(inmemorypubsub.New, "in-memory")
	pubsubloader.DefaultRegistry.RegisterComponent(kafka.NewKafka, "kafka")
	pubsubloader.DefaultRegistry.RegisterComponent(rabbitmq.NewRabbitMQ, "rabbitmq")
	pubsubloader.DefaultRegistry.RegisterComponent(jetstream.NewJetStream, "jetstream")
	pubsubloader.DefaultRegistry.RegisterComponent(mqtt.NewMQTTPubSub, "mqtt3", "mqtt")
	stateloader.DefaultRegistry.RegisterComponent(redisstate.NewRedisStateStore, "redis")
	stateloader.DefaultRegistry.RegisterComponent(inmemorystate.NewInMemoryStateStore, "in-memory")
	nrloader.DefaultRegistry.RegisterComponent(mdns.NewResolver, "mdns")

	app.Run()
}
