"""Pure figure builders: plain data in, a plotly Figure (or an HTML string) out. No model, no gradio."""
