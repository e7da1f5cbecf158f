// A list of messages (ui/pages/message_list.py): one element for the whole list, each message plain
// HTML rendered here from its data, newest (the highest id) at the top. A NiceGUI element per cell
// (9 a message) made the messages page with its 200 rows take a second. Python sends the rows once
// (props) and then changes: put(rows) adds or replaces by id, drop(ids) removes; each answers true
// (ui/pages/delta_element.py). Clicks come back as
// events: `thread` (a message id: open its thread) and `reply` (a message id).
import { markRaw, shallowReactive, toRaw } from "vue";

function byId(rows) {
  const map = shallowReactive({});
  for (const row of toRaw(rows) || []) map[row.id] = markRaw(toRaw(row));
  return map;
}

export default {
  template: `
<div class="hh-msgs">
  <div v-for="row in ordered" :key="row.id" class="hh-msg" :data-message="row.id">
    <span class="hh-msg-time" :title="row.sent_at">{{ row.time }}</span>
    <span class="hh-msg-who">{{ row.who }}</span>
    <div class="hh-msg-body">
      <span v-if="row.icon" class="hh-msg-event">
        <i :class="'material-icons hh-msg-icon text-' + row.icon_colour" role="img" :aria-label="row.kind || 'event'">{{ row.icon }}</i>
        <span>{{ row.first }}</span>
      </span>
      <span v-else>{{ row.first }}</span>
      <details v-if="row.tail.length" class="hh-msg-tail">
        <summary>{{ row.tail_label }}</summary>
        <div class="hh-mono text-xs">{{ row.tail.join("\\n") }}</div>
      </details>
    </div>
    <span class="hh-msg-actions">
      <span v-if="row.state" :class="'hh-msg-state text-' + row.state_colour">{{ row.state }}</span>
      <button v-if="row.thread" type="button" class="hh-msg-btn" aria-label="open its thread"
        :title="'thread of #' + row.id" @click="$emit('thread', row.id)"><i class="material-icons" aria-hidden="true">forum</i></button>
      <button v-if="row.reply" type="button" class="hh-msg-btn hh-msg-reply" :aria-label="'reply to #' + row.id"
        @click="$emit('reply', row.id)">reply</button>
    </span>
  </div>
</div>`,
  props: { rows: Array },
  emits: ["thread", "reply"],
  data() {
    return { shown: byId(this.rows) };
  },
  computed: {
    ordered() {
      return Object.values(this.shown).sort((a, b) => b.id - a.id);
    },
  },
  watch: {  // the element sent again (a reconnect): start over from its props
    rows(rows) {
      this.shown = byId(rows);
    },
  },
  methods: {
    put(rows) {
      for (const row of rows) this.shown[row.id] = markRaw(row);
      return true;  // taken (delta_element.py: no answer sends the element whole)
    },
    drop(ids) {
      for (const id of ids) delete this.shown[id];
      return true;
    },
  },
};
