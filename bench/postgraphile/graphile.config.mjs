// PostGraphile 5, the read peer of bench/dashboard_peer.py: the amber preset with its
// default inflection over the benchmark database, one Node process, a pool of 10.
// DATABASE_URL and PORT come from the benchmark; the product's computed fields live as
// computed-column functions in the schema `postgraphile_computed` (computed.sql).
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import { makePgService } from "postgraphile/adaptors/pg";
import { jsonPgSmartTags } from "postgraphile/utils";

// request_log has no foreign key to application: a virtual one (a smart tag) gives
// PostGraphile the nested `requestLogsByApplicationId` connection.
const RequestLogOfApplication = jsonPgSmartTags({
  version: 1,
  config: {
    class: {
      request_log: {
        tags: { foreignKey: "(application_id) references application (id)" },
      },
    },
  },
});

/** @type {GraphileConfig.Preset} */
const preset = {
  extends: [PostGraphileAmberPreset],
  plugins: [RequestLogOfApplication],
  pgServices: [
    makePgService({
      connectionString: process.env.DATABASE_URL,
      schemas: ["public", "postgraphile_computed"],
      poolConfig: { max: 10 },
    }),
  ],
  grafserv: {
    host: "127.0.0.1",
    port: Number(process.env.PORT ?? 5678),
    graphiql: false,
    watch: false,
  },
  grafast: { explain: false },
};

export default preset;
