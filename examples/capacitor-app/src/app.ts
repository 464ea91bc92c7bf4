/** mountApp draws the app: here, which bundle is running. */
export function mountApp(el: HTMLElement, version: string): void {
  el.innerHTML = `<h1>Capstan example</h1><p>Web bundle: <b>${version}</b></p>`
}
