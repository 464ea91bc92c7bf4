// Live updates in three lines: start the client before anything that might
// fail, confirm once the app has drawn itself, and look for the next update
// in the background (it is served at the next start).
import { liveUpdates } from '@capstan/capacitor/capacitor'
import { capstan } from './capstan.config'
import { mountApp } from './app'

const updates = await liveUpdates(capstan)
mountApp(document.querySelector<HTMLElement>('#app')!, updates.state.current?.version ?? 'built-in')
await updates.confirm()
void updates.update({ switchNow: false })
