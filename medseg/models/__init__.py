"""medseg.models"""
