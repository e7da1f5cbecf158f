// The swarm table (ui/pages/swarm_table.py): one NiceGUI element for the header and every row, the
// rows plain HTML rendered here from their data. A NiceGUI element per row (or per cell) cost the
// browser milliseconds a row to build. Python sends the whole table once (props) and then small
// idempotent changes: put(row), drop(name), arrange(view), select(names), sortBy(key, descending),
// each answering true (ui/pages/delta_element.py). `hosts`: a hive across hosts, whose rows show a host
// column (the element is sent again when it changes).
// The times tick here, from the epoch seconds in a row (against the server's clock), so an idle page
// sends nothing each second. Clicks go back as events: `act` (name, action), `select` (name, chosen)
// and `sort` (a column's key).
import { markRaw, reactive, shallowReactive, toRaw } from "vue";

const UNITS = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
// One clock for every row: `offset` is the server's time minus the browser's.
const clock = reactive({ now: Date.now(), offset: 0 });
setInterval(() => (clock.now = Date.now()), 1000);

// formatting.duration(seconds, parts=1): the largest unit ("4m", "2h"), "0s" for none.
function age(since) {
  let left = Math.max(0, Math.floor((clock.now + clock.offset) / 1000 - since));
  for (const [unit, size] of UNITS) {
    const count = Math.floor(left / size);
    if (count) return count + unit;
    left -= count * size;
  }
  return "0s";
}

// The rows by name: a row is replaced whole (put), never changed inside, so only the map is reactive
// (deep reactivity cost the first render ~0.3 ms a row); the view, replaced whole too, is not at all.
function rawRows(rows) {
  const map = shallowReactive({});
  for (const [name, row] of Object.entries(toRaw(rows))) map[name] = markRaw(toRaw(row));
  return map;
}

// One agent's row; its menu's open state is its own.
const SwarmRow = {
  template: `
<div class="hh-swarm hh-mono" :data-agent="row.name">
  <label class="hh-check"><input v-if="!row.peer" type="checkbox" :checked="selected"
    :aria-label="'select ' + row.name" @change="$emit('select', $event.target.checked)"></label>
  <a :href="'/agent/' + row.name" class="hh-name">{{ row.name }}</a>
  <span v-if="hosts" class="hh-cut hh-dim" data-label="host" :title="row.host || null">{{ row.host }}</span>
  <span :class="'hh-health bg-' + row.colour" :title="row.peer ? 'a peer: a Claude Code session outside the hive' : health">{{ health }}</span>
  <span class="hh-dim">{{ row.role }}</span>
  <span><button v-if="!row.peer" type="button" class="hh-btn hh-outline" title="change the model"
    @click="$emit('act', 'model')">{{ row.model }}</button><span v-else class="hh-dim">{{ row.model }}</span></span>
  <span class="hh-num" data-label="turns">{{ row.turns }}</span>
  <span class="hh-num" data-label="avg">{{ row.avg }}</span>
  <span :class="['hh-cut', row.paused ? 'text-warning' : '']" :title="row.cost_title || null">{{ row.cost }}</span>
  <span class="hh-cut hh-dim" :title="row.tools || null">{{ row.tools }}</span>
  <span class="hh-num" data-label="inbox">{{ row.inbox }}</span>
  <span class="hh-num" data-label="rem" :title="row.fired + ' reminders delivered in 24 h'">{{ row.reminders }}/{{ row.fired }}</span>
  <span class="hh-num" data-label="24h">{{ row.delivered }}</span>
  <span class="hh-dim">{{ lastTurn }}</span>
  <span class="hh-actions" v-if="!row.peer" @focusout="leave">
    <span v-if="row.controls.includes('update')" class="hh-tag bg-warning">needs update</span>
    <button v-if="row.controls.includes('cancel')" type="button" class="hh-btn text-warning"
      title="cancel the running turn" @click="$emit('act', 'cancel')">cancel</button>
    <button v-if="row.controls.includes('start')" type="button" class="hh-btn" @click="$emit('act', 'start')">start</button>
    <button v-if="row.controls.includes('stop')" type="button" class="hh-btn" @click="$emit('act', 'stop')">stop</button>
    <span class="hh-more">
      <button type="button" class="hh-btn hh-round" aria-haspopup="menu" :aria-expanded="open ? 'true' : 'false'"
        :aria-label="'more actions for ' + row.name" title="restart, kill, rebuild, destroy"
        @click="open = !open" @keydown.esc="open = false">⋯</button>
      <span v-if="open" class="hh-menu" role="menu" @keydown.esc="close">
        <button v-for="[action, enabled] in row.menu" :key="action" type="button" role="menuitem"
          :class="['hh-item', action === 'destroy' ? 'text-negative' : '']" :disabled="!enabled"
          @click="choose(action)">{{ action }}</button>
      </span>
    </span>
  </span>
  <span v-else></span>
</div>`,
  props: { row: Object, selected: Boolean, hosts: Boolean },
  emits: ["act", "select"],
  data() {
    return { open: false };
  },
  computed: {
    health() {
      const row = this.row;
      return row.prefix + (row.since === null ? "" : age(row.since)) + row.suffix;
    },
    lastTurn() {
      if (this.row.turn_running) return "now";
      return this.row.last_turn_at === null ? "never" : age(this.row.last_turn_at) + " ago";
    },
  },
  watch: {
    open(now) {
      if (now) {
        this.$nextTick(() => this.$el.querySelector(".hh-item:not([disabled])")?.focus({ preventScroll: true }));
        document.addEventListener("pointerdown", this.outside, true);
      } else {
        document.removeEventListener("pointerdown", this.outside, true);
      }
    },
  },
  unmounted() {
    document.removeEventListener("pointerdown", this.outside, true);
  },
  methods: {
    choose(action) {
      this.open = false;
      this.$emit("act", action);
    },
    close() {
      this.open = false;
      this.$el.querySelector(".hh-round")?.focus({ preventScroll: true });
    },
    outside(event) {  // a click anywhere else closes the menu
      if (!this.$el.querySelector(".hh-more")?.contains(event.target)) this.open = false;
    },
    leave(event) {  // so does the keyboard's focus leaving it (Tab)
      const more = this.$el.querySelector(".hh-more");
      if (this.open && event.relatedTarget && !more?.contains(event.relatedTarget)) this.open = false;
    },
  },
};

export default {
  components: { SwarmRow },
  template: `
<div :class="['hh-table', hosts ? 'hh-hosts' : '']">
  <div class="hh-swarm hh-swarm-head text-grey-6 text-xs">
    <template v-for="[label, key, numeric] in columns" :key="label + key">
      <button v-if="key" type="button" :class="['hh-btn', 'hh-sort', numeric ? 'hh-num' : '']"
        :aria-label="'sort by ' + label" :aria-pressed="table.sort[0] === key ? 'true' : 'false'"
        @click="$emit('sort', key)">{{ label }}{{ arrow(key) }}</button>
      <span v-else></span>
    </template>
  </div>
  <div class="hh-rows">
    <template v-for="[kind, id] in table.view" :key="kind + ':' + id">
      <div v-if="kind === 'group'" class="hh-group">{{ id }}</div>
      <swarm-row v-else-if="table.rows[id]" :row="table.rows[id]" :selected="table.selected.has(id)" :hosts="hosts"
        @act="(action) => $emit('act', id, action)" @select="(chosen) => $emit('select', id, chosen)"></swarm-row>
    </template>
  </div>
</div>`,
  props: { rows: Object, view: Array, selected: Array, sort: Array, columns: Array, clock: Number, hosts: Boolean },
  emits: ["act", "select", "sort"],
  data() {
    const table = { rows: rawRows(this.rows), view: markRaw(toRaw(this.view)), selected: new Set(this.selected) };
    return { table: { ...table, sort: this.sort } };
  },
  mounted() {
    if (this.clock) clock.offset = this.clock - Date.now();
  },
  watch: {  // the element sent again (a reconnect): start over from its props
    rows(rows) {
      this.table.rows = rawRows(rows);
    },
    view(view) {
      this.table.view = markRaw(toRaw(view));
    },
    selected(names) {
      this.table.selected = new Set(names);
    },
    sort(sort) {
      this.table.sort = sort;
    },
  },
  methods: {
    put(row) {
      this.table.rows[row.name] = markRaw(row);
      return true;  // taken (delta_element.py: no answer sends the element whole)
    },
    drop(name) {
      delete this.table.rows[name];
      return true;
    },
    arrange(view) {
      this.table.view = markRaw(view);
      return true;
    },
    select(names) {
      this.table.selected = new Set(names);
      return true;
    },
    sortBy(key, descending) {
      this.table.sort = [key, descending];
      return true;
    },
    arrow(key) {
      const [sortKey, descending] = this.table.sort;
      return key === sortKey ? (descending ? " ↓" : " ↑") : "";
    },
  },
};
