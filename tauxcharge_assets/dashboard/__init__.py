"""The dashboard page: its data (``data.py``) and its Streamlit layout (``app.py``)."""
